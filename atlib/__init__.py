"""atlib: attention transfer (Zagoruyko & Komodakis, ICLR 2017), reproducible end to end."""

__version__ = "0.1.0"
