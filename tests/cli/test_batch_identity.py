"""Records are byte-identical at any batch size (apart from `timing_ms` and `run`), gate weights included."""

import json

from .inputs import distinct_pages, invoke
from .test_ask import _without_run_fields


def test_records_at_batch_1_and_8_are_byte_identical(tmp_path):
    docs = distinct_pages(tmp_path / "docs", 4)
    args = ["ask", str(docs), "-p", "What is shown?", "-p", "Any numbers?", "-m", "tiny-random"]
    args += ["--max-new-tokens", "3", "--workers", "0", "-q", "--experts", "A,E"]  # forced: every record has a gate
    one = invoke([*args, "-b", "1"])
    eight = invoke([*args, "-b", "8"])
    assert one.exit_code == eight.exit_code == 0, one.stderr + eight.stderr
    gates = [json.loads(line)["experts"]["gate"] for line in one.stdout.splitlines()]
    assert len(gates) == 8 and all(gates)
    assert all(value == round(value, 4) for gate in gates for block in gate for value in block)
    assert _without_run_fields(one.stdout) == _without_run_fields(eight.stdout)
