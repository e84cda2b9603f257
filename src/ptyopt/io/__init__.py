"""Files people open: figures, TIFF stacks (result files arrive with the reconstruction engine)."""
