"""Served models: ``bench serve`` (Triton Inference Server through PyTriton) and the
Open Inference Protocol client that LoadGen drives (``--endpoint``)."""
