"""latentwm: latent world models on frozen DINO features. The Python API is `latentwm.load` (see `latentwm.api`);
the command-line tool is `latentwm` (`latentwm.cli`)."""

from latentwm.api import WorldModel, load

__all__ = ["WorldModel", "load"]
