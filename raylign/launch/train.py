"""`raylign train <method>`: one entry point for every registered method.

The method's recipe is composed and validated (`launch.recipes`), every setting it names is
checked before Ray or a model starts (`raylign.preflight`, then the family's own checks), and
the family's runner trains it.
"""

from __future__ import annotations

from raylign.launch.methods import ONLINE, get_method
from raylign.launch.recipes import recipe_class
from raylign.recipes import load_recipe


def main(argv: list[str]) -> int:
    """argv: the method name, then `--config FILE` and `key.sub=value` overrides."""
    name, rest = argv[0], argv[1:]
    method = get_method(name)
    cls = method.load()
    recipe = load_recipe(rest, f"train {name}", f"{method.help}.", recipe_class(name))
    if method.family == ONLINE:
        from raylign.launch.online import check_online, report, run_online

        algorithm = cls.from_recipe(recipe)
        check_online(recipe, algorithm)
        report(run_online(recipe, algorithm, name))
        return 0
    from raylign.launch.offline import check_offline, run_method

    objective = cls(recipe)
    check_offline(recipe, objective)
    run_method(recipe, objective, method)
    return 0
