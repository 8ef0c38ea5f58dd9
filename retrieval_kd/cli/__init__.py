"""The ``rkd`` command line."""
