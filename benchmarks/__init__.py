"""The benchmark (`scripts/benchmark.py` is its command line): every case runs
this project and its peers side by side, each system in its own worker process.

  harness.py   timing, worker processes, comparisons and fractions, the targets
  machine.py   the machine and the versions measured on
  models.py    random checkpoints and exports at the public configs
  peers.py     the systems: ours, keras-hub, PyTorch, ONNX Runtime, the pipelines
  cases.py     the cases and the run of them (results.json, results.png)
  serving.py   the serving case's server runs (latency, throughput)
  training.py  the training case's steps
  report.py    the table, the README's markdown, the chart
"""
