"""``bench fleet``: benchmark several EC2 instance types in one command through SkyPilot.

``plan`` (the tasks and their cost, pure), ``run`` (the launch orchestration over a backend),
``collect`` (the results brought back and their report, pure), ``sky_backend`` (the only
module that imports SkyPilot, lazily) and ``cli`` (the ``bench fleet`` subcommand).
"""
