"""ephys2tx: transcriptomic subclass of cortical GABAergic interneurons from electrophysiology."""

__version__ = "0.1.0"

#: The four subclasses every model predicts, in a fixed order.
CLASSES: tuple[str, ...] = ("Lamp5", "Pvalb", "Sst", "Vip")

__all__ = ["CLASSES", "__version__"]
