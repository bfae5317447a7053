"""``python -m scformer_scvi.cli``, the same as the ``scformer`` console script."""

from scformer_scvi.cli import main

if __name__ == "__main__":
    main()
