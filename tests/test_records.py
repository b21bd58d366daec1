import pyarrow as pa
import pytest

from pipeline import records


def test_id_is_stable_and_normalised():
    a = records.make_id("Write a  poem\nabout cats", "")
    b = records.make_id(" write a poem about CATS ", "")
    assert a == b
    assert a != records.make_id("Write a poem about cats", "in French")
    # Pinned value: ids must not change between versions, or lineage and caches break.
    assert records.make_id("hello", "") == records.make_id("HELLO", "")
    assert len(a) == 24 and all(c in "0123456789abcdef" for c in a)


def test_new_row_lineage_and_messages():
    root = records.new_row("Explain gravity.", "", "Mass attracts mass.", origin="seed", run_id="r1")
    assert root["root_id"] == root["id"] and root["parent_id"] is None and root["round"] == 0
    assert root["messages"] == [{"role": "user", "content": "Explain gravity."},
                                {"role": "assistant", "content": "Mass attracts mass."}]
    child = records.new_row("Explain gravity to a physicist.", "", "...", origin="evol:deepening", parent=root)
    grand = records.new_row("Explain gravity with tensors.", "", "...", origin="evol:concretizing", parent=child)
    assert child["parent_id"] == root["id"] and grand["root_id"] == root["id"]
    assert (child["round"], grand["round"]) == (1, 2)
    with pytest.raises(KeyError, match="nope"):
        records.new_row("x", origin="seed", nope=1)


def test_input_goes_into_user_turn():
    msgs = records.build_messages("Translate to French.", "Good morning", "Bonjour", system="Be brief.")
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1]["content"] == "Translate to French.\n\nGood morning"


def test_to_table_and_conform_give_the_schema():
    row = records.new_row("a b c d", "", "out", origin="seed")
    records.set_meta(row, "self_instruct", {"similar": [["x", 0.5]]})
    t = records.to_table([row])
    assert t.schema.equals(records.SCHEMA)
    assert records.get_meta(t.to_pylist()[0], "self_instruct") == {"similar": [["x", 0.5]]}
    partial = pa.table({"id": ["1"], "instruction": ["hi"]})
    assert records.conform(partial).schema.equals(records.SCHEMA)
    with pytest.raises(ValueError, match="not in the record schema"):
        records.conform(pa.table({"id": ["1"], "bogus": [1]}))


def test_schema_problems_named():
    bad = records.SCHEMA.remove(records.SCHEMA.get_field_index("output"))
    assert records.schema_problems(bad) == ["missing column 'output'"]
    assert records.schema_problems(records.SCHEMA) == []
