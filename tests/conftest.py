"""The suite's stage processes run on their own (no stage server, pipeline/server.py): each test's temp repo
would otherwise leave a server behind for two minutes. tests/test_server.py turns it on where it tests it."""

import os

os.environ["MONOSEM_STAGE_SERVER"] = "0"
