"""Import boundaries, checked in fresh interpreters: the model library never loads the batch layer's or
the CLI's dependencies, nothing under ``mova/`` imports click or ``mova_cli``, and the CLI's entry point
and help never load torch, transformers or Pillow."""

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "mova"
BATCH = LIBRARY / "batch"
CLI_ONLY = ["click", "tqdm", "mova_cli"]
# The batch layer (mova/batch/) reads inputs and writes JSONL; the model library needs none of it.
BATCH_ONLY = ["pymupdf", "fitz", "pillow_heif", "orjson"]
HEAVY = ["torch", "transformers", "accelerate", "safetensors", "PIL", "numpy", "pymupdf", "fitz", "llguidance"]


# The library modules the CLI may load before a command runs: torch- and Pillow-free by design (constants,
# types, model names, the expert registry and the inputs it describes, the schema check, the batch layer's
# spec, records and output files).
DESCRIPTIONS = {
    "mova.config",
    "mova.experts",
    "mova.experts.registry",
    "mova.experts.spec",
    "mova.image_inputs",
    "mova.layers",
    "mova.layers.vitdet_config",
}
TORCH_FREE = {
    "mova",
    "mova.answer_schema",
    "mova.constants",
    "mova.errors",
    "mova.model_names",
    "mova.requests",
    "mova.routing",
    "mova.schema_closing",
    *DESCRIPTIONS,
} | {
    f"mova.batch{suffix}"
    for suffix in [
        "",
        ".distributed",
        ".errors",
        ".file_names",
        ".jobs",
        ".jsonl",
        ".lock",
        ".outcome",
        ".output_checks",
        ".parts",
        ".progress",
        ".records",
        ".repair",
        ".signals",
        ".spec",
    ]
}


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def _loaded_after(code: str) -> set[str]:
    return {name.split(".")[0] for name in _modules_after(code)}


def test_import_mova_pulls_no_cli_dependency():
    # transformers itself imports tqdm: what counts is the top-level packages mova adds on top.
    code = (
        "import sys, json\n"
        "import torch, transformers, accelerate, huggingface_hub, safetensors, PIL, numpy\n"
        "before = set(sys.modules)\n"
        "import mova\n"
        "print(json.dumps([sorted(before), sorted(sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = ({name.split(".")[0] for name in names} for names in json.loads(out.splitlines()[-1]))
    added = after - before
    assert "mova" in added  # the probe works: the library itself was loaded
    assert added.isdisjoint(CLI_ONLY + BATCH_ONLY), sorted(added & set(CLI_ONLY + BATCH_ONLY))
    assert before.isdisjoint(set(CLI_ONLY + BATCH_ONLY) - {"tqdm"}), sorted(before & set(CLI_ONLY))


def test_bare_import_mova_is_light():
    loaded = _loaded_after("import mova")
    assert "mova" in loaded
    assert loaded.isdisjoint(CLI_ONLY + BATCH_ONLY + ["torch", "transformers"]), sorted(loaded & set(CLI_ONLY))


def _imports(path: Path) -> Iterator[tuple[int, list[str]]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, [node.module]


def test_no_module_under_mova_imports_click_or_the_cli():
    for path in sorted(LIBRARY.rglob("*.py")):
        for line, names in _imports(path):
            bad = [name for name in names if name.split(".")[0] in CLI_ONLY]
            assert not bad, f"{path.relative_to(LIBRARY.parent)}:{line} imports {bad}"


def test_batch_is_used_from_the_cli_and_the_batch_layer_only():
    # The model library (mova/ outside mova/batch/) never imports the batch layer nor its dependencies.
    for path in sorted(p for p in LIBRARY.rglob("*.py") if BATCH not in p.parents):
        for line, names in _imports(path):
            bad = [name for name in names if name.split(".")[0] in BATCH_ONLY or name.startswith("mova.batch")]
            assert not bad, f"{path.relative_to(LIBRARY.parent)}:{line} imports {bad}"


def test_no_cli_module_imports_a_command_module_from_below():
    # commands/ sit on top: nothing else in mova_cli imports them (no upward arrow).
    cli = LIBRARY.parent / "mova_cli"
    for path in sorted(p for p in cli.rglob("*.py") if p.parent.name != "commands" and p.name != "main.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "commands" in node.module.split("."):
                raise AssertionError(f"{path.relative_to(cli.parent)}:{node.lineno} imports {node.module}")


def test_import_cli_main_pulls_no_heavy_dependency():
    modules = _modules_after("import mova_cli.main")
    loaded = {name.split(".")[0] for name in modules}
    assert "click" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    library = {name for name in modules if name.split(".")[0] == "mova"}
    assert "mova.constants" in library  # the CLI's defaults and choices come from the library, not copies
    assert library <= TORCH_FREE, sorted(library - TORCH_FREE)


@pytest.mark.parametrize(
    "args", [["--help"], ["ask", "--help"], ["experts", "--help"], ["experts", "--json"], ["--version"]]
)
def test_help_runs_without_torch(args):
    code = (
        "import sys\nfrom mova_cli.main import cli\n"
        f"try:\n    cli({args!r}, prog_name='mova')\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
    )
    modules = _modules_after(code)
    loaded = {name.split(".")[0] for name in modules}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    library = {name for name in modules if name.split(".")[0] == "mova"}
    assert library <= TORCH_FREE, sorted(library - TORCH_FREE)


def test_the_expert_registry_and_the_configs_load_no_torch():
    # Names, letters, descriptions, configs and inputs of every expert: what routing, the presets and
    # ``--experts`` read, without building anything.
    code = (
        "from mova.config import MoVAConfig\nfrom mova.experts import EXPERTS\n"
        "from mova.routing import build_routing_prompt\n"
        "config = MoVAConfig.from_name('tiny-random')\n"
        "inputs = [config.expert_config(name).image_input() for name in config.enabled_experts]\n"
        "assert build_routing_prompt(list(EXPERTS)) and len(inputs) == len(EXPERTS)\n"
    )
    modules = _modules_after(code)
    loaded = {name.split(".")[0] for name in modules}
    assert "mova" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    library = {name for name in modules if name.split(".")[0] == "mova"}
    assert library <= TORCH_FREE, sorted(library - TORCH_FREE)


def test_the_processor_loads_no_model_code():
    # The processor needs torch for its tensors and transformers for its tokenizers, but no encoder's code:
    # every expert's input comes from its registry entry, the base encoder's from mova.image_inputs.
    from mova.experts import EXPERTS

    networks = {spec.network.rpartition(".")[0] for spec in EXPERTS.values()}
    model_code = {"mova.base_encoder", "mova.modeling", "mova.adapter", "mova.language_model", "mova.experts.base"}
    code = (
        "from PIL import Image\nfrom mova.config import MoVAConfig\nfrom mova.processing import MoVAProcessor\n"
        "from mova.tokenization import build_tiny_bert_tokenizer, build_tiny_llama_tokenizer\n"
        "config = MoVAConfig.from_name('tiny-random')\n"
        "processor = MoVAProcessor(config, build_tiny_llama_tokenizer(), build_tiny_bert_tokenizer())\n"
        "keys = ['clip', *processor.expert_keys.values()]\n"
        "inputs = processor.preprocess(Image.new('RGB', (50, 30), 'red'), keys)\n"
        "assert set(inputs) == set(keys) and len(set(keys)) == 4\n"
    )
    modules = _modules_after(code)
    assert "torch" in modules and "mova.processing" in modules  # the probe works: tensors were made
    loaded = {name for name in modules if name in model_code | networks or name.startswith("mova.layers.")}
    assert loaded <= {"mova.layers.vitdet_config"}, sorted(loaded)


def test_reader_processes_load_no_onnxruntime():
    # What a reader worker imports before its first page, then a page identified and rendered: pymupdf 2.x
    # pulled onnxruntime (and its telemetry) into every such process.
    code = (
        "import importlib, pymupdf\n"
        "from mova.batch import decoding, readers as prefetch, sources\n"
        "for name in prefetch.DEFAULT_PRELOAD:\n    importlib.import_module(name)\n"
        "doc = pymupdf.open(); doc.new_page(); data = doc.tobytes()\n"
        "assert decoding.render_pdf_page(data, 1, sources.RenderSettings()).size[0] > 0\n"
    )
    loaded = _loaded_after(code)
    assert "pymupdf" in loaded  # the probe works: the PDF backend was loaded
    assert loaded.isdisjoint(["onnxruntime", "pymupdf4llm", "pymupdf_layout"]), sorted(loaded)
