"""Run by test_lazy_reading.py in a fresh process: under a data-segment limit of what the process uses plus half
the file's size, inspect and crop a foreign file with the CLI; then show that the limit bites."""
import json
import resource
import sys

import numpy as np
from typer.testing import CliRunner

from ptyopt.cli import app

path, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
runner = CliRunner()
# warm up (modules imported, thread pools started) on a small file before the limit
small = out + ".small.npy"
np.save(small, np.ones((16, 8, 8), dtype=np.float32))
runner.invoke(app, ["inspect", small])
runner.invoke(app, ["convert", small, "--out", out + ".small.h5", "--energy-kv", "300", "--conv-angle-mrad", "20",
                    "--dk-inv-ang", "0.05", "--step-ang", "0.5", "--scan-shape", "4,4", "--scan-crop-y", "0:2"])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
used = int(status["VmData"].split()[0]) * 1024
limit = used + size // 2
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
inspect = runner.invoke(app, ["inspect", path])
convert = runner.invoke(app, ["convert", path, "--out", out, "--energy-kv", "300", "--conv-angle-mrad", "20",
                              "--dk-inv-ang", "0.05", "--step-ang", "0.5", "--scan-crop-y", "2:6",
                              "--scan-crop-x", "3:7"])
try:
    np.ones(size // 4, dtype=np.float32)  # what reading the whole file would need
    full_read = "fitted"
except MemoryError:
    full_read = "MemoryError"
print(json.dumps({"inspect": [inspect.exit_code, inspect.output], "convert": [convert.exit_code, convert.output],
                  "full_read": full_read, "limit_mib": limit / 2**20, "file_mib": size / 2**20}))
