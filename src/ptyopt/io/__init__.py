"""Files people open: result files, checkpoints and summary figures."""
