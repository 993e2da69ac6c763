"""The form of a user's code named by import path, ``package.module:name``: a network's factory (``model.name``) or
a method's class (``method.name``)."""

import re

IMPORT_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def path_slug(name: str) -> str:
    """A name as a run id shows it, which holds no colon: ``mypkg.losses:Mine`` -> ``mypkg.losses.Mine`` (an import
    path always holds a dot, which no built-in name does, so no two names meet)."""
    return name.replace(":", ".")
