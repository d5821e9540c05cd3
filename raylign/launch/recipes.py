"""A method's recipe class, composed from its family's sections and what the method declares.

An online recipe is `OnlineRecipe` (model, data, sampling, reward, reference, engine), an
offline one `OfflineTrainConfig` (the offline trainer's sections); a method adds its own section
(`grpo:`, `dpo:` ...), any extra sections it reads, and new defaults for shared ones
(`MethodSettings`). Both families default the output folder to `runs/<method>`. The composed
class validates a recipe strictly (unknown keys fail, naming the key) and reads the old keys
the family and the method list as renamed for one release.
"""

from __future__ import annotations

import functools
import importlib
import typing
from pathlib import Path

from pydantic import BaseModel, create_model

from raylign.config import StrictModel, deep_merge
from raylign.launch.methods import ONLINE, get_method, method_for_recipe

# Recipes of the commands that are not methods: jobs/ file prefix -> config class.
OTHER_RECIPES = {
    "smoke": "raylign.smoke:SmokeConfig",
    "best_of_n": "raylign.generation.best_of_n:BestOfNConfig",
    "generate": "raylign.generation.best_of_n:BestOfNConfig",
    "almost": "raylign.feedback.almost:AlmostConfig",
    "annotate": "raylign.feedback.config:AnnotateConfig",
    "alpacafarm": "raylign.studies.alpacafarm:AlpacaFarmStudy",
    "almost_study": "raylign.studies.almost:AlmostStudy",
    "cut_online": "raylign.studies.cut_online:CutOnlineStudy",
}


def _family_base(family: str) -> type[StrictModel]:
    if family == ONLINE:
        from raylign.launch.online import OnlineRecipe

        return OnlineRecipe
    from raylign.training.config import OfflineTrainConfig

    return OfflineTrainConfig


def _redefault(field, current, update):
    """(annotation, default) of a base field whose default the method changes."""
    annotation = field.annotation
    if field.metadata:  # keep Annotated markers (preflight checks)
        annotation = typing.Annotated[(annotation, *field.metadata)]
    if isinstance(current, BaseModel):
        return annotation, type(current).model_validate(deep_merge(current.model_dump(), update))
    return annotation, update


@functools.cache
def recipe_class(name: str) -> type[StrictModel]:
    """The recipe class of method `name` (built once per process)."""
    method = get_method(name)
    cls = method.load()
    base = _family_base(method.family)
    output = {"engine": {"output_dir": f"runs/{name}"}} if method.family == ONLINE else {"output_dir": f"runs/{name}"}
    defaults = deep_merge(output, cls.recipe_defaults)
    base_defaults = base()
    fields: dict = {}
    for key, section in cls.extra_sections.items():
        fields[key] = (section, section.model_validate(defaults.pop(key, {})))
    for key, update in defaults.items():
        if key not in base.model_fields:
            raise TypeError(f"{cls.__name__}.recipe_defaults: '{key}' is not a section of a {method.family} recipe")
        fields[key] = _redefault(base.model_fields[key], getattr(base_defaults, key), update)
    if cls.section:
        fields[cls.section] = (cls.config_class, cls.config_class())
    recipe = create_model(f"{cls.__name__}Recipe", __base__=base, __module__=__name__, **fields)
    recipe.renamed_keys = {**base.renamed_keys, **cls.renamed_keys}
    recipe.__doc__ = f"`raylign train {name}`: {method.help}."
    return recipe


def recipe_class_for(path: str | Path) -> type[StrictModel] | None:
    """The class that validates a recipe file under jobs/, by its name's longest matching prefix,
    a method's or another command's (`cut_online` is the study's, `cut_judgments` CUT's)."""
    stem = Path(path).stem
    method = method_for_recipe(path)
    others = [prefix for prefix in OTHER_RECIPES if stem == prefix or stem.startswith(prefix + "_")]
    other = max(others, key=len) if others else None
    method_prefix = max((p for p in method.prefixes() if stem == p or stem.startswith(p + "_")), key=len,
                        default="") if method else ""
    if other is None or (method is not None and len(method_prefix) >= len(other)):
        return recipe_class(method.name) if method is not None else None
    module, name = OTHER_RECIPES[other].split(":")
    return getattr(importlib.import_module(module), name)
