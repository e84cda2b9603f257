"""Ground-truth specimens and 4D-STEM simulation."""
