"""Code that ships inside packaged artifacts: the TorchServe handler and the Triton Python model.

These files run inside the model servers, not in Flywheel's process: they import only what the
servers' own images have (numpy, and torch for TorchServe).
"""
