"""Query and document encoders (SPLADE, dense). Importing this package loads no model and no torch."""
