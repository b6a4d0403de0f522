"""Labels from class sub-folders only when they are labels: the rule, in one pure function.

A folder of ``holiday/``, ``misc/``, ``work/`` is organised, not labelled; taking its folder names for classes and
reporting an accuracy would be a silent guess. Folder names count as labels when every one of them is among the
model's class names (``model.class_names``), or when the user says so (``data.inputs.labels_from_folders: true``).
"""

from __future__ import annotations

from lit_infer.errors import ConfigError

_FIXES = "set model.class_names to the model's classes, or data.inputs.labels_from_folders=true if the folders are them"


def folder_labels_refused(
    folders: list[str], class_names: list[str] | None, width: int | None, asked: bool | None
) -> str | None:
    """``None`` when the sub-folder names ``folders`` are to be used as labels, else the one line that says why not.

    ``asked``: ``data.inputs.labels_from_folders`` (``None``: decide; ``True``: the user says they are labels). Raises
    :class:`ConfigError` when the user asked for labels that cannot be right (names the model lacks, more folders
    than the network has outputs).
    """
    shown = folders[:5] + (["..."] if len(folders) > 5 else [])
    unknown = [n for n in folders if class_names is not None and n not in class_names]
    if asked:
        if unknown:
            raise ConfigError(
                "data.inputs.labels_from_folders",
                True,
                f"the sub-folders {unknown[:5]} are not among model.class_names",
                "Give the model's full class list in model.class_names, or set data.inputs.labels_from_folders=false",
            )
        if class_names is None and width is not None and len(folders) > width:
            raise ConfigError(
                "data.inputs.labels_from_folders",
                True,
                f"{len(folders)} class sub-folders {shown} but the network has {width} outputs",
                "Set model.class_names to the model's classes (folders are matched by name), "
                "or data.inputs.labels_from_folders=false to predict without labels",
            )
        return None
    if class_names is None:
        reason = "the model declares no class names"
    elif unknown:
        reason = f"{unknown[:5]} are not among model.class_names"
    else:
        return None
    return f"lit-infer: no labels, no metrics: the sub-folders {shown} are not taken as classes ({reason}); {_FIXES}"
