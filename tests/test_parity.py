"""The MXNet (GluonCV, GluonNLP) and PyTorch paths build the same networks.

The MXNet side runs in its own environment, so it is probed in a subprocess there.
"""

import json
import subprocess

import pytest
import torch
from transformers import BertForSequenceClassification

from bench.run.runner import backend_available, python_for
from models.bert.torch import base_config
from models.ssd.torch_net import build_ssd512_resnet50, gluon_param_counts

PROBE = """
import json
import mxnet as mx
from bench.run.spec import RunSpec
from models.bert.gluon import BertGluon
from models.ssd.gluon import SsdGluon, parameter_counts

# a hybridized block keeps the graph of its first call: one network per mode
ssd = SsdGluon(RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2))
ssd.setup()
with mx.autograd.train_mode():
    train_out = ssd.net(ssd.images)
infer = SsdGluon(RunSpec(workload="ssd", backend="mxnet", device="cpu", batch=2))
infer.setup()
infer_out = infer.step()
bert = BertGluon(RunSpec(workload="bert", backend="mxnet", device="cpu", batch=2, seq_len=16))
bert.setup()
logits = bert.step()
print(json.dumps({
    "ssd_counts": parameter_counts(ssd.net),
    "ssd_train_shapes": [list(a.shape) for a in train_out],
    "ssd_infer_shapes": [list(a.shape) for a in infer_out],
    "bert_parameters": bert.details()["parameters"],
    "bert_logits_shape": list(logits.shape),
}))
"""

pytestmark = pytest.mark.skipif(
    not backend_available("mxnet"), reason="the MXNet environment (.venv-mxnet) is not set up"
)


@pytest.fixture(scope="module")
def mxnet_facts():
    proc = subprocess.run(
        [str(python_for("mxnet")), "-c", PROBE], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ssd_structure_agrees(mxnet_facts):
    net = build_ssd512_resnet50(torch.device("cpu"))
    counts = gluon_param_counts(net)
    assert mxnet_facts["ssd_counts"] == counts
    with torch.no_grad():
        cls, box, anchors = net.train()(torch.zeros(2, 3, 512, 512))
    torch_shapes = [list(cls.shape), list(box.shape), list(anchors.shape)]
    assert (
        mxnet_facts["ssd_train_shapes"]
        == torch_shapes
        == [[2, 6132, 21], [2, 6132, 4], [1, 6132, 4]]
    )
    # inference: GluonCV gives ids/scores as [N, 100, 1]; the port as [N, 100]
    assert mxnet_facts["ssd_infer_shapes"] == [[2, 100, 1], [2, 100, 1], [2, 100, 4]]


def test_bert_parameter_counts_agree(mxnet_facts):
    with torch.device("meta"):
        model = BertForSequenceClassification(base_config())
    assert mxnet_facts["bert_parameters"] == sum(p.numel() for p in model.parameters())
    assert mxnet_facts["bert_logits_shape"] == [2, 2]
