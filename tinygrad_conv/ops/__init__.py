"""Op definitions, one module per family; each op's forward and backward side by side.

Importing a module registers its ops in ``tinygrad_conv.engine.OPS`` under their names.
"""
