"""The pack's example workflows (``workflows/*.json``): they load, validate and run.

Static checks (CI, no ComfyUI): every workflow validates against ``tests/data/object_info.json``
(the node definitions of a real server, written by ``scripts/snapshot_object_info.py``), converts
to the expected API prompt, is named ``<model>_<task>_<variant>.json``, explains itself in a note
and lays its nodes out without overlaps; broken workflows fail with messages naming the node and
the input. With ``COMFYUI_PATH``: the snapshot agrees with the live server (so it cannot rot), the
server lists the workflows as the pack's templates, the toy workflow runs to an animated WEBP, and
(``browser``) the real frontend loads each workflow and queues exactly the prompt ``ui_to_api`` builds.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from trainer.workflows import (
    FRONTEND_ONLY_TYPES,
    WorkflowError,
    comparable_node_def,
    load_workflow,
    note_text,
    ui_to_api,
    validate_workflow,
)

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = REPO / "workflows"
SNAPSHOT = Path(__file__).parent / "data" / "object_info.json"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
NAME_PATTERN = re.compile(r"^(?P<model>[a-z0-9]+)_(?P<task>[a-z0-9]+)_(?P<variant>[a-z0-9]+(?:_[a-z0-9]+)*)\.json$")
PACK_DIR_NAME = "ComfyUI-Stride"

# the API prompt each shipped workflow must turn into: class_type -> count
EXPECTED_CLASS_TYPES = {
    "toy_t2v_teacher_8step": {
        "StrideToyTeacherLoader": 1, "StrideToyTextEncode": 2, "StrideToyEmptyLatent": 1, "CFGGuider": 1,
        "RandomNoise": 1, "StrideFlowSampler": 1, "StrideTokenShiftScheduler": 1, "SamplerCustomAdvanced": 1,
        "StrideToyDecode": 1, "SaveAnimatedWEBP": 1,
    },
    "toy_t2v_4step": {
        "StrideToyTeacherLoader": 1, "LoraLoaderModelOnly": 1, "StrideToyTextEncode": 1, "StrideToyEmptyLatent": 1,
        "BasicGuider": 1, "RandomNoise": 1, "StrideConsistencySampler": 1, "StrideStudentScheduler": 1,
        "SamplerCustomAdvanced": 1, "StrideToyDecode": 1, "SaveAnimatedWEBP": 1,
    },
    "toy_interpolate_4step": {
        "StrideToyTeacherLoader": 1, "StrideToyTextEncode": 2, "StrideToyEmptyLatent": 1, "CFGGuider": 1,
        "RandomNoise": 1, "StrideLatentInterpolatorLoader": 1, "StrideInterpolatedSampler": 1,
        "StrideTokenShiftScheduler": 1, "SamplerCustomAdvanced": 1, "StrideToyDecode": 1, "StrideFrameInterpolate": 1,
        "SaveAnimatedWEBP": 2,
    },
    "wan21_t2v_4step_lora": {
        "UNETLoader": 1, "CLIPLoader": 1, "CLIPTextEncode": 2, "LoraLoaderModelOnly": 1, "ModelSamplingSD3": 1,
        "CFGGuider": 1, "RandomNoise": 1, "StrideConsistencySampler": 1, "StrideStudentScheduler": 1,
        "EmptyHunyuanLatentVideo": 1, "VAELoader": 1, "VAEDecode": 1, "SaveAnimatedWEBP": 1, "SamplerCustomAdvanced": 1,
    },
    "toy_distill_lora": {
        "StrideToyTeacherLoader": 1, "StrideToyTextEncode": 3, "StrideToyEmptyLatent": 1, "StrideDistillLoRA": 1,
        "SaveImage": 1, "BasicGuider": 1, "RandomNoise": 1, "StrideConsistencySampler": 1, "StrideStudentScheduler": 1,
        "SamplerCustomAdvanced": 1, "StrideToyDecode": 1, "SaveAnimatedWEBP": 1,
    },
    "wan21_distill_lora": {
        "UNETLoader": 1, "CLIPLoader": 1, "CLIPTextEncode": 3, "VAELoader": 1, "EmptyHunyuanLatentVideo": 1,
        "ModelSamplingSD3": 1, "StrideDistillLoRA": 1, "SaveImage": 1, "BasicGuider": 1, "RandomNoise": 1,
        "StrideConsistencySampler": 1, "StrideStudentScheduler": 1, "SamplerCustomAdvanced": 1, "VAEDecode": 1,
        "SaveAnimatedWEBP": 1,
    },
}
TOY_WORKFLOWS = [p for p in WORKFLOWS if p.stem.startswith("toy_")]


@pytest.fixture(scope="module")
def object_info() -> dict:
    return json.loads(SNAPSHOT.read_text())


def _by_id(workflow: dict, node_id: int) -> dict:
    return next(node for node in workflow["nodes"] if node["id"] == node_id)


def _by_type(workflow: dict, node_type: str) -> dict:
    return next(node for node in workflow["nodes"] if node["type"] == node_type)


TOY_T2V = WORKFLOW_DIR / "toy_t2v_teacher_8step.json"


def _toy() -> dict:
    return load_workflow(TOY_T2V)


def _wan() -> dict:
    return load_workflow(WORKFLOW_DIR / "wan21_t2v_4step_lora.json")


def _file_combo_values(workflow: dict) -> list[str]:
    """Model files the workflow's loaders ask for."""
    values = []
    for node in workflow["nodes"]:
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and value.endswith(".safetensors"):
                values.append(value)
    return values


# ------------------------------------------------------------------ static: the shipped workflows

def test_every_expected_workflow_ships():
    assert {p.stem for p in WORKFLOWS} >= set(EXPECTED_CLASS_TYPES), [p.name for p in WORKFLOWS]
    subfolders = [p.name for p in WORKFLOW_DIR.iterdir() if p.is_dir()]
    assert not subfolders, f"workflows/ must be flat (ComfyUI lists only top-level files): {subfolders}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_named_model_task_variant(path):
    assert NAME_PATTERN.match(path.name), f"{path.name}: expected <model>_<task>_<variant>.json in lower case"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates_against_the_snapshot(path, object_info):
    errors = validate_workflow(load_workflow(path), object_info)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_converts_to_the_expected_api_prompt(path, object_info):
    workflow = load_workflow(path)
    prompt = ui_to_api(workflow, object_info)
    server_nodes = [n for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY_TYPES]
    assert sorted(prompt) == sorted(str(n["id"]) for n in server_nodes)
    counts = Counter(node["class_type"] for node in prompt.values())
    if path.stem in EXPECTED_CLASS_TYPES:
        assert counts == Counter(EXPECTED_CLASS_TYPES[path.stem])
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link: [source id, output slot] to a node that is in the prompt
                assert value[0] in prompt and isinstance(value[1], int), f"node {node_id} input {name}: {value}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_explains_itself_in_a_note(path):
    workflow = load_workflow(path)
    text = note_text(workflow)
    assert len(text) > 200, f"{path.name} needs a Note/MarkdownNote saying what it does and what it needs"
    for file_name in _file_combo_values(workflow):  # every file a loader asks for is named
        assert file_name in text, f"{path.name}: the note does not tell users where to get {file_name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_layout_is_tidy(path):
    """No two nodes overlap (title bar included), so the graph reads cleanly when opened."""
    title_height = 30
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - title_height, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in load_workflow(path)["nodes"]]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
            assert not overlap, f"{path.name}: nodes {a[0]} and {b[0]} overlap"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_has_a_template_thumbnail(path):
    """The frontend's template dialog shows ``<name>.jpg`` next to a pack's ``<name>.json``."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.exists(), f"{thumbnail.name} missing: the template dialog would show a blank card"
    assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumbnail.name} is not a JPEG"
    assert thumbnail.stat().st_size < 200_000


def test_toy_workflow_needs_no_downloads_and_wan_workflow_says_where_files_go():
    toy, wan = _toy(), _wan()
    assert not _file_combo_values(toy)
    assert _by_type(toy, "SaveAnimatedWEBP")["widgets_values"][1] == 8
    assert _by_type(toy, "CFGGuider")["widgets_values"] == [3.0]  # the toy teacher's reference CFG
    assert _by_type(toy, "StrideFlowSampler")["widgets_values"] == [2]
    text = note_text(wan)
    for folder in ("models/diffusion_models", "models/text_encoders", "models/vae", "models/loras"):
        assert folder in text
    for node in wan["nodes"]:  # the frontend's missing-models dialog offers these
        for model in node["properties"].get("models", []):
            assert model["url"].startswith("https://") and model["url"].endswith(model["name"])
    assert _by_type(wan, "StrideStudentScheduler")["widgets_values"][0] == "lightx2v_4step"
    assert _by_type(wan, "EmptyHunyuanLatentVideo")["widgets_values"][:3] == [832, 480, 81]


def test_toy_4step_workflow_samples_the_shipped_student_with_its_own_schedule():
    from trainer.toy.student import STUDENT_LORA_PATH

    workflow = load_workflow(WORKFLOW_DIR / "toy_t2v_4step.json")
    # the only file it asks for ships with the pack, and the scheduler reads that same LoRA's schedule
    assert _file_combo_values(workflow) == [STUDENT_LORA_PATH.name] * 2
    assert _by_type(workflow, "LoraLoaderModelOnly")["widgets_values"] == [STUDENT_LORA_PATH.name, 1.0]
    assert _by_type(workflow, "StrideStudentScheduler")["widgets_values"][3] == STUDENT_LORA_PATH.name
    assert not any(node["properties"].get("models") for node in workflow["nodes"])  # nothing to download
    assert not [n for n in workflow["nodes"] if n["type"] in ("CFGGuider", "KSampler")]  # CFG-free


def test_snapshot_is_small_sorted_and_holds_every_used_node_type(object_info):
    assert list(object_info) == sorted(object_info)
    used = {n["type"] for p in WORKFLOWS for n in load_workflow(p)["nodes"] if n["type"] not in FRONTEND_ONLY_TYPES}
    assert used <= set(object_info)
    extra = {t for t in object_info if not t.startswith("Stride")} - used
    assert not extra, f"snapshot holds node types no workflow uses: {extra}"


# ------------------------------------------------------------------ static: broken workflows are caught

def test_unknown_node_type_is_named(object_info):
    workflow = _toy()
    _by_type(workflow, "StrideFlowSampler")["type"] = "StrideFooSampler"
    errors = validate_workflow(workflow, object_info)
    assert any("node 8 'StrideFooSampler' is not a known node type" in e for e in errors), errors
    with pytest.raises(WorkflowError, match="StrideFooSampler"):
        ui_to_api(workflow, object_info)


@pytest.mark.parametrize("node_type, index, value, words", [
    ("StrideFlowSampler", 0, 3, ("node 8 'StrideFlowSampler'", "'order'", "above the maximum 2")),
    ("CFGGuider", 0, -1.0, ("node 6 'CFGGuider'", "'cfg'", "below the minimum 0")),
    ("StrideTokenShiftScheduler", 0, 2.5, ("'StrideTokenShiftScheduler'", "'steps'", "not an integer")),
    ("SaveAnimatedWEBP", 2, "yes", ("'SaveAnimatedWEBP'", "'lossless'", "not a boolean")),
    ("SaveAnimatedWEBP", 4, "best", ("'SaveAnimatedWEBP'", "'method'", "not one of the options")),
    ("StrideToyTextEncode", 0, 7, ("'StrideToyTextEncode'", "'prompt'", "not a string")),
    ("RandomNoise", 1, "sometimes", ("'RandomNoise'", "'noise_seed'", "control after generate")),
])
def test_bad_widget_value_names_node_and_input(object_info, node_type, index, value, words):
    workflow = _toy()
    _by_type(workflow, node_type)["widgets_values"][index] = value
    errors = validate_workflow(workflow, object_info)
    assert any(all(w in e for w in words) for e in errors), errors


def test_combo_not_in_options_and_missing_files(object_info):
    workflow = _wan()
    _by_type(workflow, "StrideStudentScheduler")["widgets_values"][0] = "lightx2v_8step"
    errors = validate_workflow(workflow, object_info)
    assert any("'StrideStudentScheduler' input 'preset': 'lightx2v_8step' is not one of" in e for e in errors), errors
    # model files are the installation's business unless asked: the snapshot server has none
    assert len(validate_workflow(_wan(), object_info)) == 0
    with_files = validate_workflow(_wan(), object_info, check_files=True)
    assert any("'UNETLoader' input 'unet_name'" in e for e in with_files), with_files


def test_changed_widget_count_is_reported(object_info):
    workflow = _toy()
    _by_type(workflow, "StrideFlowSampler")["widgets_values"].append(0.5)  # as if a node lost an input
    errors = validate_workflow(workflow, object_info)
    assert any("'StrideFlowSampler' has 2 widget values but the node type has 1 (order)" in e for e in errors), errors
    workflow = _toy()
    _by_type(workflow, "RandomNoise")["widgets_values"] = [42]  # the seed's control value is part of the layout
    assert any("'RandomNoise' has 1 widget values" in e for e in validate_workflow(workflow, object_info))


def test_broken_links_are_reported(object_info):
    # a link to a node that does not exist
    workflow = _toy()
    workflow["links"][0][1] = 99
    assert any("node 99 does not exist" in e for e in validate_workflow(workflow, object_info))
    # a link whose type does not match the output it leaves and the input it enters
    workflow = _toy()
    link = next(l for l in workflow["links"] if l[3] == 6 and l[4] == 0)  # loader MODEL -> guider model
    link[5] = "LATENT"
    errors = validate_workflow(workflow, object_info)
    assert any(f"link {link[0]}" in e and "does not match" in e and "MODEL" in e for e in errors), errors
    # a link into an input slot the node does not have
    workflow = _toy()
    workflow["links"][-1][4] = 5
    assert any("has no input slot 5" in e for e in validate_workflow(workflow, object_info))
    # a node input that references a link the table does not have
    workflow = _toy()
    _by_type(workflow, "StrideToyDecode")["inputs"][0]["link"] = 404
    errors = validate_workflow(workflow, object_info)
    assert any("'StrideToyDecode' input 'samples' references link 404" in e for e in errors), errors
    # a required input left unconnected
    workflow = _toy()
    guider = _by_type(workflow, "CFGGuider")
    dropped = guider["inputs"][0]["link"]
    guider["inputs"][0]["link"] = None
    workflow["links"] = [l for l in workflow["links"] if l[0] != dropped]
    _by_type(workflow, "StrideToyTeacherLoader")["outputs"][0]["links"] = []
    errors = validate_workflow(workflow, object_info)
    assert errors == ["node 6 'CFGGuider' required input 'model' (MODEL) is not connected"], errors


def test_structure_the_frontend_requires(object_info):
    workflow = _toy()
    del _by_id(workflow, 5)["size"]
    workflow["last_node_id"] = 3
    errors = validate_workflow(workflow, object_info)
    assert any("node 5 'StrideToyEmptyLatent' lacks size" in e for e in errors), errors
    assert any("last_node_id 3 is below the highest node id 12" in e for e in errors), errors
    api_format = ui_to_api(_toy(), object_info)
    assert validate_workflow(api_format, object_info) == [
        "not a UI-format workflow (no 'nodes' list); API-format prompts are not workflows"]


# ------------------------------------------------------------------ static: the conversion follows the frontend

def _add_node(workflow: dict, node: dict) -> dict:
    workflow["nodes"].append(node)
    workflow["last_node_id"] = max(workflow["last_node_id"], node["id"])
    return node


def _relink(workflow: dict, link_id: int, **changes) -> None:
    fields = ("id", "src", "src_slot", "dst", "dst_slot", "type")
    link = next(l for l in workflow["links"] if l[0] == link_id)
    for key, value in changes.items():
        link[fields.index(key)] = value


def test_reroute_and_primitive_node_follow_the_frontend(object_info):
    reference = ui_to_api(_toy(), object_info)
    workflow = _toy()
    base = dict(flags={}, order=0, mode=0, properties={})
    # a Reroute between the teacher loader and the guider
    model_link = _by_type(workflow, "CFGGuider")["inputs"][0]["link"]
    _add_node(workflow, dict(id=20, type="Reroute", pos=[380, 0], size=[75, 26], **base,
                             inputs=[{"name": "", "type": "*", "link": model_link}],
                             outputs=[{"name": "", "type": "MODEL", "links": [50]}]))
    _relink(workflow, model_link, dst=20, dst_slot=0)
    _by_type(workflow, "CFGGuider")["inputs"][0]["link"] = 50
    workflow["links"].append([50, 20, 0, 6, 0, "MODEL"])
    # a PrimitiveNode driving the scheduler's steps: the widget keeps its slot, the primitive's value wins
    _add_node(workflow, dict(id=21, type="PrimitiveNode", pos=[460, 600], size=[210, 82], **base,
                             inputs=[], outputs=[{"name": "INT", "type": "INT", "widget": {"name": "steps"},
                                                  "links": [51]}], widgets_values=[8, "fixed"]))
    scheduler = _by_type(workflow, "StrideTokenShiftScheduler")
    scheduler["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 51})
    scheduler["widgets_values"][0] = 3  # stale widget value, overridden by the primitive
    workflow["links"].append([51, 21, 0, 9, 1, "INT"])
    workflow["last_link_id"] = 51
    assert validate_workflow(workflow, object_info) == []
    assert ui_to_api(workflow, object_info) == reference


def test_bypassed_node_passes_its_matching_input_through(object_info):
    workflow = _wan()
    _by_type(workflow, "LoraLoaderModelOnly")["mode"] = 4  # bypass the LoRA
    prompt = ui_to_api(workflow, object_info)
    assert "3" not in prompt
    assert prompt["7"]["inputs"]["model"] == ["2", 0]  # ModelSamplingSD3 now reads the UNETLoader directly
    workflow["nodes"] = [n for n in workflow["nodes"] if n["type"] != "SaveAnimatedWEBP"]
    workflow["links"] = [l for l in workflow["links"] if l[3] != 16]
    assert any("no active output node" in e for e in validate_workflow(workflow, object_info))


def test_seed_named_int_without_flag_carries_a_control_value():
    """The frontend adds "control after generate" to INT inputs named seed/noise_seed unless told otherwise."""
    info = {"Seeded": {"input": {"required": {"seed": ["INT", {"min": 0, "max": 10}],
                                              "steps": ["INT", {"min": 1, "max": 5, "control_after_generate": True}],
                                              "noise_seed": ["INT", {"control_after_generate": False}]}},
                       "input_order": {"required": ["seed", "steps", "noise_seed"]}, "output": [], "output_node": True}}
    node = {"id": 1, "type": "Seeded", "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0, "mode": 0,
            "properties": {}, "inputs": [], "outputs": [], "widgets_values": [3, "randomize", 2, "fixed", 7]}
    workflow = {"last_node_id": 1, "last_link_id": 0, "nodes": [node], "links": [], "version": 0.4}
    assert validate_workflow(workflow, info) == []
    assert ui_to_api(workflow, info)["1"]["inputs"] == {"seed": 3, "steps": 2, "noise_seed": 7}
    node["widgets_values"] = [3, 2, 7]
    assert any("has 3 widget values but the node type has 5" in e for e in validate_workflow(workflow, info))


# ------------------------------------------------------------------ live ComfyUI (COMFYUI_PATH)

@pytest.fixture(scope="module")
def live_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.mark.comfyui
def test_snapshot_agrees_with_the_live_server(live_info, object_info):
    stale = []
    for node_type, snap_def in object_info.items():
        if node_type not in live_info:
            stale.append(f"{node_type}: no longer on the server")
            continue
        live_def = live_info[node_type]
        if comparable_node_def(node_type, snap_def, live_def) != comparable_node_def(node_type, live_def, snap_def):
            stale.append(f"{node_type}: definition changed")
    missing = sorted(t for t in live_info if t.startswith("Stride") and t not in object_info)
    stale += [f"{t}: on the server but not in the snapshot" for t in missing]
    assert not stale, ("tests/data/object_info.json is stale; re-run scripts/snapshot_object_info.py:\n"
                       + "\n".join(stale))


@pytest.mark.comfyui
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates_against_the_live_server(path, live_info):
    errors = validate_workflow(load_workflow(path), live_info)
    assert not errors, "\n".join(errors)


@pytest.mark.comfyui
def test_server_lists_and_serves_the_pack_workflows(comfy_server):
    templates = comfy_server.get("/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(p.stem for p in WORKFLOWS), templates
    for path in WORKFLOWS:
        served = comfy_server.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{path.name}")
        assert served == load_workflow(path)
        thumbnail = f"{comfy_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{path.stem}.jpg"
        with urllib.request.urlopen(thumbnail, timeout=30) as resp:
            assert resp.read() == path.with_suffix(".jpg").read_bytes()


def _require_toy_teacher():
    from trainer.toy.teacher import WEIGHTS_PATH

    if not WEIGHTS_PATH.exists():
        pytest.skip(f"toy teacher weights not trained yet ({WEIGHTS_PATH.relative_to(REPO)} is missing); "
                    "run `python -m trainer toy pretrain` then `toy export`")


def _require_shipped_files(path: Path):
    """Toy workflows run on files that ship with the pack: the teacher, and for the 4-step one the student."""
    _require_toy_teacher()
    from trainer.toy.student import STUDENT_LORA_PATH

    if STUDENT_LORA_PATH.name in _file_combo_values(load_workflow(path)) and not STUDENT_LORA_PATH.exists():
        pytest.skip(f"toy student LoRA not shipped yet ({STUDENT_LORA_PATH.relative_to(REPO)} is missing); "
                    "run `python -m trainer distill` and copy its LoRA there")


def _short_run(prompt: dict) -> dict:
    """The workflow's prompt with in-graph training cut to 3 iterations (the graph is unchanged)."""
    for node in prompt.values():
        if node["class_type"] == "StrideDistillLoRA":
            node["inputs"]["iterations"] = 3
            node["inputs"]["save_name"] = f"{node['inputs']['save_name']}_test"
    return prompt


@pytest.mark.comfyui
@pytest.mark.parametrize("path", TOY_WORKFLOWS, ids=lambda p: p.stem)
def test_toy_workflow_runs_to_its_animated_webps(comfy_server, live_info, path):
    _require_shipped_files(path)
    Image = pytest.importorskip("PIL.Image")
    workflow = load_workflow(path)
    prompt = _short_run(ui_to_api(workflow, live_info))
    entry = comfy_server.run(prompt, timeout=900)
    from comfy_harness import execution_error

    assert execution_error(entry) is None, f"{execution_error(entry)}\n{comfy_server.log()[-3000:]}"
    saves = [node for node in workflow["nodes"] if node["type"] in ("SaveAnimatedWEBP", "SaveImage")]
    assert saves
    for node in saves:
        outputs = entry["outputs"][str(node["id"])]
        (image,) = outputs["images"]
        path_out = comfy_server.base_dir / "output" / image["subfolder"] / image["filename"]
        assert image["type"] == "output" and path_out.exists(), image
        if node["type"] == "SaveAnimatedWEBP":
            assert outputs.get("animated") == [True], outputs
            with Image.open(path_out) as webp:
                assert webp.format == "WEBP" and webp.is_animated and webp.n_frames >= 9, path.name


# ------------------------------------------------------------------ the real frontend (COMFYUI_PATH + Chromium)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


SCREENSHOTS = Path(os.environ.get("STRIDE_ARTIFACTS", REPO / "tests" / "artifacts")) / "screenshots"
# nodes the frontend cannot draw (missing type) or flags with errors are what users see as red nodes
_RED_NODES_JS = """() => window.app.graph._nodes
    .filter(n => !window.LiteGraph.registered_node_types[n.type] || n.has_errors)
    .map(n => `${n.id} ${n.type}`)"""


def _open_frontend(playwright, comfy_server):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(comfy_server.url)
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
    return browser, page


def _show_pack_templates(page):
    """Open the frontend's template dialog (sidebar button) and pick this pack's category."""
    title = page.get_by_text("Get Started with a Template")
    try:  # a fresh frontend opens the dialog by itself on first start
        title.wait_for(state="visible", timeout=5_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError; then open it from the sidebar
        page.locator("button.templates-tab-button").first.click()
        title.wait_for(state="visible", timeout=30_000)
    page.get_by_role("option", name=PACK_DIR_NAME).click()
    page.wait_for_timeout(300)


def _check_missing_models_dialog(page, path: Path):
    """Toy workflows need no downloads; Wan workflows list exactly their model files with URLs."""
    page.wait_for_timeout(1_000)
    wanted = [model["name"] for node in load_workflow(path)["nodes"]
              for model in node.get("properties", {}).get("models", [])]
    dialog = page.locator(".p-dialog", has_text="Missing Models")
    if not wanted:
        assert dialog.count() == 0, f"{path.name} asks for downloads: {dialog.first.inner_text()[:300]}"
        return
    dialog.first.wait_for(state="visible", timeout=10_000)
    text = dialog.first.inner_text()
    assert all(name in text for name in wanted), f"{path.name}: missing-models dialog lacks {wanted}: {text[:400]}"
    page.keyboard.press("Escape")
    dialog.first.wait_for(state="hidden", timeout=10_000)


def _require_browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set CHROMIUM_PATH)")
    return sync_api


@pytest.mark.comfyui
@pytest.mark.browser
def test_frontend_lists_loads_each_workflow_and_queues_the_same_prompt(comfy_server, live_info):
    sync_api = _require_browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser, page = _open_frontend(playwright, comfy_server)
        try:
            # the templates dialog lists the pack under Custom Nodes; each card opens its workflow
            for path in WORKFLOWS:
                _show_pack_templates(page)
                dialog = page.locator(".p-dialog").last
                for other in WORKFLOWS:
                    assert dialog.get_by_text(other.stem, exact=True).count() >= 1, f"{other.stem} not listed"
                if path == WORKFLOWS[0]:
                    page.screenshot(path=str(SCREENSHOTS / "templates_dialog.png"))
                dialog.get_by_text(path.stem, exact=True).first.click()
                expected_types = sorted(node["type"] for node in load_workflow(path)["nodes"])
                page.wait_for_function("(types) => JSON.stringify(window.app.graph._nodes.map(n => n.type).sort()) "
                                       "=== JSON.stringify(types)", arg=expected_types, timeout=60_000)
                assert page.evaluate(_RED_NODES_JS) == [], f"{path.name}: red nodes after opening the template"
                _check_missing_models_dialog(page, path)
            for path in WORKFLOWS:
                workflow = load_workflow(path)
                result = page.evaluate("""async (wf) => {
                    await window.app.loadGraphData(wf);
                    const unknown = wf.nodes.map(n => n.type).filter(t => !window.LiteGraph.registered_node_types[t]);
                    const prompt = await window.app.graphToPrompt();
                    return {unknown, output: prompt.output, workflow: prompt.workflow};
                }""", workflow)
                assert result["unknown"] == [], f"{path.name}: the frontend does not know {result['unknown']}"
                assert page.evaluate(_RED_NODES_JS) == [], f"{path.name}: red nodes"
                _check_missing_models_dialog(page, path)
                assert result["output"] == ui_to_api(workflow, live_info), path.name
                # what the frontend would save back is still a valid workflow with the same links
                assert validate_workflow(result["workflow"], live_info) == [], path.name
                assert result["workflow"]["links"] == workflow["links"], path.name
                page.evaluate("() => { window.app.canvas.ds.scale = 0.7; window.app.canvas.ds.offset = [500, 40]; "
                              "window.app.graph.setDirtyCanvas(true, true); }")
                page.wait_for_timeout(800)
                page.screenshot(path=str(SCREENSHOTS / f"{path.stem}.png"))
                assert (SCREENSHOTS / f"{path.stem}.png").stat().st_size > 10_000
        finally:
            browser.close()


TOY_T2V_WORKFLOWS = [WORKFLOW_DIR / "toy_t2v_4step.json", TOY_T2V]


@pytest.mark.comfyui
@pytest.mark.browser
@pytest.mark.parametrize("path", TOY_T2V_WORKFLOWS, ids=lambda p: p.stem)
def test_frontend_runs_the_toy_t2v_workflow_and_shows_its_animated_preview(comfy_server, path):
    _require_shipped_files(path)
    sync_api = _require_browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    workflow = load_workflow(path)
    save_id = _by_type(workflow, "SaveAnimatedWEBP")["id"]
    with sync_api.sync_playwright() as playwright:
        browser, page = _open_frontend(playwright, comfy_server)
        try:
            # open it from the template dialog and press Run, as a user would
            _show_pack_templates(page)
            page.locator(".p-dialog").last.get_by_text(path.stem, exact=True).first.click()
            page.wait_for_function("(n) => window.app.graph._nodes.length === n", arg=len(workflow["nodes"]),
                                   timeout=60_000)
            _check_missing_models_dialog(page, path)
            page.get_by_role("button", name="Run").first.click()
            # the preview appears on the save node once the server reports its output
            page.wait_for_function("""(id) => {
                const node = window.app.graph.getNodeById(id);
                return node && node.imgs && node.imgs.length > 0 && node.imgs[0].complete
                    && node.imgs[0].naturalWidth > 0;
            }""", arg=save_id, timeout=600_000)
            src = page.evaluate("(id) => window.app.graph.getNodeById(id).imgs[0].src", save_id)
            assert ".webp" in src and "type=output" in src, src
            page.evaluate("""(id) => {  // centre the save node so the screenshot shows the preview
                const node = window.app.graph.getNodeById(id), ds = window.app.canvas.ds;
                ds.scale = 1.0;
                ds.offset = [600 - node.pos[0], 200 - node.pos[1]];
                window.app.graph.setDirtyCanvas(true, true);
            }""", save_id)
            page.wait_for_timeout(800)
            page.screenshot(path=str(SCREENSHOTS / f"{path.stem}_preview.png"))
        finally:
            browser.close()
