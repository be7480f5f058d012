"""Distillation methods, one class each, looked up by name in ``METHODS``."""

from __future__ import annotations


def method_registry() -> dict[str, type]:
    from .adv import AdvMethod
    from .avdm2 import Avdm2Method
    from .gpd import GpdMethod

    return {cls.name: cls for cls in (AdvMethod, GpdMethod, Avdm2Method)}
