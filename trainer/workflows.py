"""ComfyUI workflows in the UI format: checking them against ``/object_info`` and converting them to API format.

A UI-format workflow is what the ComfyUI frontend saves and users share (``nodes`` with positional
``widgets_values``, and a ``links`` table); the API format is what ``POST /prompt`` accepts. This
module owns both directions of that contract for the pack's example workflows in ``workflows/``:
``validate_workflow`` lists every way a workflow no longer matches the node definitions a server
reports (unknown node types, broken or mistyped links, widget values out of range or not in a
combo, unconnected required inputs), and ``ui_to_api`` rebuilds the prompt the frontend would
queue. The widget layout mirrors the frontend (comfyui-frontend-package 1.27): widgets follow
``input_order`` (required, then optional); *every* widget-typed input owns a slot in
``widgets_values`` even when a link drives it (the link wins); INT inputs with
``control_after_generate`` (or named ``seed``/``noise_seed`` without an explicit flag) carry one
extra "control after generate" value, COMBOs with it two; upload combos carry their upload widget's
value. Pure Python: no ComfyUI import, so the checks run in CI.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
# Nodes that exist only in the frontend: never sent to the server, so not in /object_info.
FRONTEND_ONLY_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
WIDGET_TYPES = frozenset({"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
COMBO_CONTROL_VALUES = CONTROL_VALUES | {"increment-wrap"}
# upload option -> how many extra values its upload widget(s) add to widgets_values
UPLOAD_EXTRA_VALUES = {"image_upload": 1, "video_upload": 1, "animated_image_upload": 1, "audio_upload": 2}
# A combo value with one of these endings names a file in the user's model (or input) folders:
# its presence is an installation question, checked only with ``check_files=True``.
FILE_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".pkl",
                   ".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm", ".mov", ".wav", ".mp3", ".flac")
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(ValueError):
    """A workflow that does not match the node definitions; ``errors`` lists every problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid workflow:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class InputSpec:
    """One input of a node definition, as the frontend sees it."""

    name: str
    type: str  # "COMBO" for every combo form
    options: dict = field(default_factory=dict, hash=False, compare=False)
    required: bool = True
    choices: tuple | None = None  # combo options

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """Whether the frontend adds a "control after generate" widget after this one."""
        if self.type == "INT":
            flag = self.options.get("control_after_generate")
            return bool(flag) if flag is not None else self.name in SEED_NAMES
        return self.type == "COMBO" and bool(self.options.get("control_after_generate"))

    def extra_values(self) -> list[str]:
        """Names of the frontend-only values that follow this widget's value in widgets_values."""
        extra = []
        if self.has_control:
            extra.append("control_after_generate")
            if self.type == "COMBO":
                extra.append("control_filter_list")
        for option, count in UPLOAD_EXTRA_VALUES.items():
            if self.options.get(option):
                extra += [option] * count
        return extra


@dataclass(frozen=True)
class Link:
    id: int
    src: int
    src_slot: int
    dst: int
    dst_slot: int
    type: str


def load_workflow(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------- node definitions

def _parse_spec(name: str, raw: Any, required: bool) -> InputSpec:
    raw = raw if isinstance(raw, (list, tuple)) else [raw]
    kind = raw[0] if raw else "*"
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):  # V1 combo: [[choices...], {...}]
        return InputSpec(name, "COMBO", options, required, tuple(kind))
    if kind == "COMBO":  # V3 combo: ["COMBO", {"options": [...]}]
        return InputSpec(name, "COMBO", options, required, tuple(options.get("options", ())))
    return InputSpec(name, str(kind), options, required)


def input_specs(node_def: dict) -> list[InputSpec]:
    """The node's inputs in the frontend's order: ``input_order`` required, then optional, then the rest."""
    inputs = node_def.get("input") or {}
    order = node_def.get("input_order") or {}
    specs: list[InputSpec] = []
    for group, required in (("required", True), ("optional", False)):
        table = inputs.get(group) or {}
        names = [n for n in order.get(group, []) if n in table]
        names += [n for n in table if n not in names]
        specs += [_parse_spec(n, table[n], required) for n in names]
    return specs


def widget_layout(node_def: dict) -> list[tuple[InputSpec, str | None]]:
    """One entry per ``widgets_values`` slot: (input, None) for its value, (input, extra name) for extras."""
    layout: list[tuple[InputSpec, str | None]] = []
    for spec in input_specs(node_def):
        if spec.is_widget:
            layout.append((spec, None))
            layout += [(spec, extra) for extra in spec.extra_values()]
    return layout


def output_types(node_def: dict) -> list[str]:
    return ["COMBO" if isinstance(t, (list, tuple)) else str(t) for t in node_def.get("output") or []]


def types_compatible(a: str, b: str) -> bool:
    """ComfyUI's rule: ``*`` matches anything; comma-separated types match when they share one."""
    if not a or not b or a == "*" or b == "*":
        return True
    return bool({t.strip() for t in str(a).split(",")} & {t.strip() for t in str(b).split(",")})


# ---------------------------------------------------------------- workflow structure

def parse_links(workflow: dict) -> tuple[dict[int, Link], list[str]]:
    """The links table by id; accepts the 0.4 array form and the version-1 object form."""
    links: dict[int, Link] = {}
    errors: list[str] = []
    for raw in workflow.get("links") or []:
        try:
            if isinstance(raw, dict):
                link = Link(int(raw["id"]), int(raw["origin_id"]), int(raw["origin_slot"]), int(raw["target_id"]),
                            int(raw["target_slot"]), str(raw.get("type", "*")))
            else:
                link = Link(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), str(raw[5]))
        except (KeyError, IndexError, TypeError, ValueError):
            errors.append(f"malformed link entry {raw!r}")
            continue
        if link.id in links:
            errors.append(f"link {link.id} appears twice in the links table")
        links[link.id] = link
    return links, errors


def _node_label(node: dict) -> str:
    return f"node {node.get('id')} '{node.get('type')}'"


def _check_widget_value(label: str, spec: InputSpec, value: Any, check_files: bool) -> str | None:
    where = f"{label} input '{spec.name}'"
    if spec.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{where}: {value!r} is not a boolean"
    if spec.type == "STRING":
        return None if isinstance(value, str) else f"{where}: {value!r} is not a string"
    if spec.type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{where}: {value!r} is not a number"
        if spec.type == "INT" and not float(value).is_integer():
            return f"{where}: {value!r} is not an integer"
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return f"{where}: {value!r} is below the minimum {low}"
        if high is not None and value > high:
            return f"{where}: {value!r} is above the maximum {high}"
        return None
    if spec.type == "COMBO":
        choices = spec.choices or ()
        if value in choices:
            return None
        names_a_file = isinstance(value, str) and (value.lower().endswith(FILE_EXTENSIONS)
                                                   or any(spec.options.get(o) for o in UPLOAD_EXTRA_VALUES))
        if names_a_file and not check_files:
            return None  # a file the user must provide; its presence is the installation's business
        shown = ", ".join(map(repr, choices[:12])) + (", ..." if len(choices) > 12 else "")
        if names_a_file:
            return f"{where}: file {value!r} is not installed on this server (it lists [{shown}])"
        return f"{where}: {value!r} is not one of the options [{shown}]"
    return None


def validate_workflow(workflow: dict, object_info: dict, *, check_files: bool = False) -> list[str]:
    """Every problem that stops ``workflow`` from loading cleanly and running on a server with ``object_info``.

    Returns human-readable error strings naming the node (id and type) and the input; empty means
    valid. ``check_files=True`` also requires combo values that name model or input files to be in
    the server's lists (off by default: the snapshot server has no model files).
    """
    errors: list[str] = []
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return ["not a UI-format workflow (no 'nodes' list); API-format prompts are not workflows"]
    if not all(isinstance(node, dict) for node in workflow["nodes"]):
        return ["every entry of 'nodes' must be an object"]
    if (workflow.get("definitions") or {}).get("subgraphs"):
        errors.append("workflow uses subgraphs, which this validator does not support")
    errors += _schema_errors(workflow)
    links, link_errors = parse_links(workflow)
    errors += link_errors

    nodes: dict[int, dict] = {}
    for node in workflow["nodes"]:
        node_id = node.get("id")
        if not isinstance(node_id, int):
            errors.append(f"node with id {node_id!r}: ids must be integers")
            continue
        if node_id in nodes:
            errors.append(f"{_node_label(node)}: node id {node_id} is used twice")
        nodes[node_id] = node
    # the frontend numbers new nodes and links from these, so a low value makes ids collide
    for key, ids, what in (("last_node_id", nodes, "node"), ("last_link_id", links, "link")):
        last = workflow.get(key)
        if ids and isinstance(last, int) and last < max(ids):
            errors.append(f"{key} {last} is below the highest {what} id {max(ids)}")

    # each node: its type, its slots against the definition, its widget values
    known: dict[int, dict] = {}
    for node_id, node in nodes.items():
        label, node_type = _node_label(node), node.get("type")
        if node_type in FRONTEND_ONLY_TYPES:
            continue
        node_def = object_info.get(node_type)
        if node_def is None:
            errors.append(f"{label} is not a known node type (not in this pack or stock ComfyUI)")
            continue
        known[node_id] = node_def
        errors += _validate_node(node, node_def, links, check_files)

    # each link: both ends exist, slots in range, types agree, and the nodes reference it back
    for link in links.values():
        errors += _validate_link(link, nodes, known)
    for node_id, node in nodes.items():
        for slot, socket in enumerate(node.get("inputs") or []):
            link_id = socket.get("link")
            if link_id is None:
                continue
            link = links.get(link_id)
            if link is None:
                errors.append(f"{_node_label(node)} input '{socket.get('name')}' references link {link_id}, "
                              "which is not in the links table")
            elif (link.dst, link.dst_slot) != (node_id, slot):
                errors.append(f"{_node_label(node)} input '{socket.get('name')}' references link {link_id}, "
                              f"but that link ends at node {link.dst} slot {link.dst_slot}")
        for slot, socket in enumerate(node.get("outputs") or []):
            for link_id in socket.get("links") or []:
                link = links.get(link_id)
                if link is None:
                    errors.append(f"{_node_label(node)} output '{socket.get('name')}' references link {link_id}, "
                                  "which is not in the links table")
                elif (link.src, link.src_slot) != (node_id, slot):
                    errors.append(f"{_node_label(node)} output '{socket.get('name')}' references link {link_id}, "
                                  f"but that link starts at node {link.src} slot {link.src_slot}")

    if known and not any(object_info[n["type"]].get("output_node") for i, n in nodes.items()
                         if i in known and n.get("mode", 0) not in (MODE_MUTED, MODE_BYPASS)):
        errors.append("the workflow has no active output node (such as a Save node), so nothing would run")
    return errors


def _is_vector2(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _schema_errors(workflow: dict) -> list[str]:
    """The fields the frontend's workflow schema (zod, comfyui-frontend-package) requires to load a file."""
    errors = []
    if not isinstance(workflow.get("version"), (int, float)):
        errors.append("workflow has no numeric 'version' (the frontend writes 0.4)")
    for key in ("last_node_id", "last_link_id"):
        if not isinstance(workflow.get(key), int):
            errors.append(f"workflow has no integer '{key}'")
    if not isinstance(workflow.get("links"), list):
        errors.append("workflow has no 'links' list")
    for node in workflow["nodes"]:
        label = _node_label(node)
        missing = [k for k in ("id", "type", "pos", "size", "flags", "order", "mode", "properties") if k not in node]
        if missing:
            errors.append(f"{label} lacks {', '.join(missing)}, which the frontend requires")
            continue
        for key in ("pos", "size"):
            if not _is_vector2(node[key]):
                errors.append(f"{label}: '{key}' must be two numbers, not {node[key]!r}")
        if not isinstance(node["flags"], dict) or not isinstance(node["properties"], dict):
            errors.append(f"{label}: 'flags' and 'properties' must be objects")
            continue
        for model in node["properties"].get("models") or []:
            if not all(isinstance(model.get(k), str) for k in ("name", "url", "directory")):
                errors.append(f"{label}: each properties.models entry needs name, url and directory")
    return errors


def _validate_node(node: dict, node_def: dict, links: dict[int, Link], check_files: bool) -> list[str]:
    errors: list[str] = []
    label = _node_label(node)
    specs = {spec.name: spec for spec in input_specs(node_def)}

    connected: set[str] = set()
    for socket in node.get("inputs") or []:
        name = socket.get("name")
        spec = specs.get(name)
        if spec is None:
            errors.append(f"{label} has an input '{name}' that the node type does not define "
                          f"(it has: {', '.join(specs) or 'none'})")
            continue
        if not types_compatible(socket.get("type", "*"), spec.type):
            errors.append(f"{label} input '{name}' is typed {socket.get('type')!r} "
                          f"but the node type says {spec.type!r}")
        if socket.get("link") is not None:
            connected.add(name)

    expected_outputs = output_types(node_def)
    for slot, socket in enumerate(node.get("outputs") or []):
        if slot >= len(expected_outputs):
            if socket.get("links"):
                errors.append(f"{label} output slot {slot} does not exist (the node type has "
                              f"{len(expected_outputs)} outputs)")
        elif not types_compatible(socket.get("type", "*"), expected_outputs[slot]):
            errors.append(f"{label} output {slot} is typed {socket.get('type')!r} but the node type says "
                          f"{expected_outputs[slot]!r}")

    layout = widget_layout(node_def)
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some frontend extensions save widgets by name
        errors.append(f"{label}: widgets_values is a mapping; expected the frontend's positional list")
        values = []
    values = list(values or [])
    if len(values) != len(layout):
        names = [spec.name if extra is None else extra for spec, extra in layout]
        errors.append(f"{label} has {len(values)} widget values but the node type has {len(layout)} "
                      f"({', '.join(names) or 'none'}); the node's inputs changed since the workflow was saved")
    else:
        for (spec, extra), value in zip(layout, values):
            if extra == "control_after_generate":
                allowed = COMBO_CONTROL_VALUES if spec.type == "COMBO" else CONTROL_VALUES
                if value not in allowed:
                    errors.append(f"{label} input '{spec.name}': control after generate {value!r} is not one of "
                                  f"{sorted(allowed)}")
            elif extra is None and spec.name not in connected:
                problem = _check_widget_value(label, spec, value, check_files)
                if problem:
                    errors.append(problem)

    if node.get("mode", 0) != MODE_MUTED:
        for spec in specs.values():
            if spec.required and not spec.is_widget and spec.name not in connected:
                errors.append(f"{label} required input '{spec.name}' ({spec.type}) is not connected")
    return errors


def _validate_link(link: Link, nodes: dict[int, dict], known: dict[int, dict]) -> list[str]:
    errors: list[str] = []
    where = f"link {link.id} (node {link.src} slot {link.src_slot} -> node {link.dst} slot {link.dst_slot})"
    src, dst = nodes.get(link.src), nodes.get(link.dst)
    if src is None or dst is None:
        missing = [str(n) for n, node in ((link.src, src), (link.dst, dst)) if node is None]
        return [f"{where}: node {' and '.join(missing)} does not exist"]
    src_outputs, dst_inputs = src.get("outputs") or [], dst.get("inputs") or []
    if not 0 <= link.src_slot < len(src_outputs):
        errors.append(f"{where}: {_node_label(src)} has no output slot {link.src_slot}")
    else:
        out_type = src_outputs[link.src_slot].get("type", "*")
        if link.src in known:
            defined = output_types(known[link.src])
            if link.src_slot >= len(defined):
                errors.append(f"{where}: {_node_label(src)} has only {len(defined)} outputs")
            else:
                out_type = defined[link.src_slot]
        if not types_compatible(link.type, out_type):
            errors.append(f"{where}: link type {link.type!r} does not match {_node_label(src)} "
                          f"output type {out_type!r}")
    if not 0 <= link.dst_slot < len(dst_inputs):
        errors.append(f"{where}: {_node_label(dst)} has no input slot {link.dst_slot}")
    else:
        socket = dst_inputs[link.dst_slot]
        in_type = socket.get("type", "*")
        if link.dst in known:
            spec = {s.name: s for s in input_specs(known[link.dst])}.get(socket.get("name"))
            in_type = spec.type if spec else in_type
        if not types_compatible(link.type, in_type):
            errors.append(f"{where}: link type {link.type!r} does not match {_node_label(dst)} input "
                          f"'{socket.get('name')}' type {in_type!r}")
        if socket.get("link") != link.id:
            errors.append(f"{where}: {_node_label(dst)} input '{socket.get('name')}' references link "
                          f"{socket.get('link')}, not {link.id}")
    return errors


# ---------------------------------------------------------------- conversion

def widget_values(node: dict, node_def: dict) -> dict[str, Any]:
    """Widget name -> value for a node, dropping the frontend-only extras (control, upload)."""
    layout = widget_layout(node_def)
    values = list(node.get("widgets_values") or [])
    return {spec.name: value for (spec, extra), value in zip(layout, values) if extra is None}


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API-format prompt the frontend would queue for ``workflow``.

    Notes are dropped, Reroutes followed through, PrimitiveNode values inlined, muted nodes (mode 2)
    dropped with their outgoing links, bypassed nodes (mode 4) replaced by their matching input.
    Raises ``WorkflowError`` with every validation problem if the workflow is invalid.
    """
    errors = validate_workflow(workflow, object_info)
    if errors:
        raise WorkflowError(errors)
    links, _ = parse_links(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}

    def resolve(link_id: int, seen: frozenset = frozenset()):
        """Follow a link upstream through frontend-only and bypassed nodes.

        Returns ("link", [source id, slot]), ("value", primitive value) or None (nothing upstream).
        """
        link = links[link_id]
        if link_id in seen:
            raise WorkflowError([f"link {link_id} is part of a cycle through Reroute or bypassed nodes"])
        seen = seen | {link_id}
        src = nodes[link.src]
        mode = src.get("mode", 0)
        if src["type"] == "Reroute":
            upstream = (src.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else resolve(upstream, seen)
        if src["type"] == "PrimitiveNode":
            return ("value", (src.get("widgets_values") or [None])[0])
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            # the frontend passes through the input at the same slot if its type matches, else the first match
            sockets = src.get("inputs") or []
            out_type = link.type
            candidates = ([sockets[link.src_slot]] if link.src_slot < len(sockets) else []) + sockets
            for socket in candidates:
                if socket.get("link") is not None and types_compatible(socket.get("type", "*"), out_type):
                    return resolve(socket["link"], seen)
            return None
        return ("link", [str(link.src), link.src_slot])

    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        if node["type"] in FRONTEND_ONLY_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = object_info[node["type"]]
        inputs: dict[str, Any] = dict(widget_values(node, node_def))
        for socket in node.get("inputs") or []:
            if socket.get("link") is None:
                continue
            resolved = resolve(socket["link"])
            if resolved is not None:  # nothing upstream (muted source): a widget keeps its own value
                inputs[socket["name"]] = resolved[1]
        title = node.get("title") or node_def.get("display_name") or node["type"]
        prompt[str(node_id)] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    return prompt


def note_text(workflow: dict) -> str:
    """The text of the workflow's Note/MarkdownNote nodes, joined (empty if it has none)."""
    texts = [str((node.get("widgets_values") or [""])[0]) for node in workflow.get("nodes", [])
             if node.get("type") in NOTE_TYPES]
    return "\n\n".join(t for t in texts if t.strip())


# ---------------------------------------------------------------- snapshots of /object_info

# Combos whose options are a user's saved state rather than files (the rest are recognised by their
# file-name options): they differ between installations, so snapshots never pin them.
USER_LISTED_COMBOS = frozenset({("StrideSchedulePreset", "preset")})


def _looks_like_file(option: Any) -> bool:
    return isinstance(option, str) and option.lower().endswith(FILE_EXTENSIONS)


def installation_dependent(node_type: str, spec: InputSpec, *others: InputSpec) -> bool:
    """Whether a combo's options depend on the installation (model files, uploads, saved presets)."""
    if spec.type != "COMBO":
        return False
    if (node_type, spec.name) in USER_LISTED_COMBOS or any(spec.options.get(o) for o in UPLOAD_EXTRA_VALUES):
        return True
    return any(not s.choices or any(map(_looks_like_file, s.choices)) for s in (spec, *others))


def comparable_node_def(node_type: str, node_def: dict, other: dict | None = None) -> dict:
    """``node_def`` with installation-dependent combo options masked, for comparing two servers' definitions."""
    masked = json.loads(json.dumps(node_def))
    other_specs = {s.name: s for s in input_specs(other)} if other else {}
    for group in ("required", "optional"):
        for name, raw in (masked.get("input", {}).get(group) or {}).items():
            spec = _parse_spec(name, raw, group == "required")
            extra = [other_specs[name]] if name in other_specs else []
            if not installation_dependent(node_type, spec, *extra):
                continue
            if isinstance(raw[0], list):
                raw[0] = ["<installation-dependent>"]
            else:
                raw[1]["options"] = ["<installation-dependent>"]
    return masked


def snapshot(object_info: dict, node_types: set[str] | list[str]) -> dict:
    """``object_info`` restricted to ``node_types`` (sorted), with the user's file names removed from combos."""
    result = {}
    for node_type in sorted(node_types):
        node_def = json.loads(json.dumps(object_info[node_type]))
        for group in ("required", "optional"):
            for raw in (node_def.get("input", {}).get(group) or {}).values():
                if isinstance(raw, list) and raw and isinstance(raw[0], list):
                    raw[0] = [o for o in raw[0] if not _looks_like_file(o)]
                elif isinstance(raw, list) and raw and raw[0] == "COMBO" and len(raw) > 1:
                    raw[1]["options"] = [o for o in raw[1].get("options", []) if not _looks_like_file(o)]
        result[node_type] = node_def
    return result


def workflow_node_types(workflows: list[dict]) -> set[str]:
    """The server-side node types the workflows use (frontend-only nodes left out)."""
    return {node["type"] for workflow in workflows for node in workflow.get("nodes", [])
            if node.get("type") not in FRONTEND_ONLY_TYPES}
