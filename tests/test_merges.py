"""The merges, each with a case that changes something and one that changes nothing: flags by the vLLM
option they set (fleetserve.catalog.merge_flags, apply_overrides), and host data across pyinfra's
layers (fleetserve.plan.layers), read from a real pyinfra Inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetserve.catalog import apply_overrides, merge_flags
from fleetserve.flagkeys import identity, option_of, table_for
from fleetserve.plan import plan_inventory
from fleetserve.plan.layers import merge_layers
from tests.fakefleet import image_store, loaded_hosts

TABLE = table_for("0.18.0")
CATALOG = {"dtype": "bfloat16", "max-num-seqs": 32, "enable-prefix-caching": True,
           "additional-config": {"a": 1, "b": 2}}
A2 = {"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": image_store()}


# --- which option a key sets ------------------------------------------------------------------------

@pytest.mark.parametrize("key,dest,negative", [
    ("max-num-seqs", "max_num_seqs", False), ("max_num_seqs", "max_num_seqs", False),
    ("max-num-seq", "max_num_seqs", False), ("no-enable-prefix-caching", "enable_prefix_caching", True),
    ("no-enable-prefix", "enable_prefix_caching", True), ("enable_prefix_caching", "enable_prefix_caching", False),
])
def test_a_key_names_its_option_however_it_is_spelt(key, dest, negative):
    option, is_negative = option_of(TABLE, key)
    assert (option.dest, is_negative) == (dest, negative)


def test_an_unknown_or_ambiguous_key_is_its_own_option():
    assert option_of(TABLE, "enable-magic") is None and identity(TABLE, "enable-magic") == "enable-magic"
    assert option_of(TABLE, "a") is None  # --a could be many options: vLLM's check says which
    assert identity(TABLE, "compilation-config.mode") == "compilation_config.mode"  # a part of a JSON option
    assert identity(None, "max_num_seqs") == "max_num_seqs"  # no table: the key as written


# --- flags over flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    # another spelling of a catalog option replaces it, in its place
    ({"max_num_seqs": 64}, {"dtype": "bfloat16", "max_num_seqs": 64, "enable-prefix-caching": True,
                            "additional-config": {"a": 1, "b": 2}}),
    ({"max-num-seq": 64}, {"dtype": "bfloat16", "max-num-seq": 64, "enable-prefix-caching": True,
                           "additional-config": {"a": 1, "b": 2}}),
    # the negative form replaces the positive one; false/null replace it with nothing to pass
    ({"no-enable-prefix": True}, {**CATALOG, "enable-prefix-caching": None} | {"no-enable-prefix": True}),
    ({"enable_prefix_caching": False}, {**CATALOG, "enable-prefix-caching": None} | {"enable_prefix_caching": False}),
    # a JSON option merges key by key
    ({"additional_config": {"b": 3}}, {**CATALOG, "additional-config": None} | {"additional_config": {"a": 1, "b": 3}}),
    # within one mapping the later key of an option wins
    ({"max-num-seqs": 48, "max_num_seqs": 64}, {**CATALOG, "max-num-seqs": None} | {"max_num_seqs": 64}),
])
def test_an_override_replaces_the_catalogs_flag_for_the_same_option(override, expected):
    merged = merge_flags(CATALOG, override, TABLE)
    expected = {k: v for k, v in expected.items() if v is not None}
    assert merged == expected
    # one key per option, the catalog's order kept
    assert len({identity(TABLE, k) for k in merged}) == len(merged)
    assert [identity(TABLE, k) for k in merged][:2] == ["dtype", "max_num_seqs"]


@pytest.mark.parametrize("override", [{}, {"max-num-seqs": 32}, {"dtype": "bfloat16", "additional-config": {"a": 1}}])
def test_an_override_saying_what_the_catalog_says_changes_nothing(override):
    assert merge_flags(CATALOG, override, TABLE) == CATALOG


def test_a_new_option_comes_after_the_catalogs_and_no_table_merges_by_key():
    assert list(merge_flags(CATALOG, {"enforce-eager": True}, TABLE))[-1] == "enforce-eager"
    assert merge_flags({"max-num-seqs": 32}, {"max_num_seqs": 64}, None) == {"max-num-seqs": 32, "max_num_seqs": 64}


def test_service_layers_merge_flags_by_option_the_named_layer_last():
    service = {"name": "s", "image": {"vllm_version": "0.18.0"}, "flags": {"max-num-seqs": 32}}
    merged = apply_overrides(service, {"*": {"flags": {"max_num_seqs": 64}}, "s": {"flags": {"max-num-seq": 48}}})
    assert merged["flags"] == {"max-num-seq": 48}
    assert apply_overrides(service, {}) == service


def _args(overrides: dict) -> list[str]:
    data = {**A2, "service_overrides": {"qwen3-30b": overrides}}
    return list(plan_inventory([("a2-01", data)], ["qwen3"])[0].services[0].serve_args)


def test_the_rendered_command_has_each_option_once():
    catalog = _args({})
    assert catalog.count("--max-num-seqs") == 1 and "--enable-prefix-caching" in catalog
    seqs = _args({"flags": {"max_num_seqs": 64}})
    assert seqs.count("--max-num-seqs") == 1 and seqs[seqs.index("--max-num-seqs") + 1] == "64"
    assert seqs.index("--max-num-seqs") == catalog.index("--max-num-seqs")  # in the catalog's place
    negative = _args({"flags": {"no-enable-prefix": True}})
    assert "--no-enable-prefix-caching" in negative and "--enable-prefix-caching" not in negative
    for dropped in (False, None):
        args = _args({"flags": {"enable_prefix_caching": dropped}})
        assert not any("prefix-caching" in a for a in args)
        assert args == [a for a in catalog if a != "--enable-prefix-caching"]


# --- host data across pyinfra's layers -----------------------------------------------------------------

def test_layers_add_up_the_higher_winning_key_by_key():
    merged = merge_layers([{"*": {"env": {"A": "all"}}, "s": {"port": 8100, "flags": {"max-num-seqs": 48, "dtype": "x"}}},
                           {"s": {"flags": {"max_num_seqs": 64}}}])
    assert merged == {"*": {"env": {"A": "all"}}, "s": {"port": 8100, "flags": {"max-num-seqs": 48, "dtype": "x",
                                                                                 "max_num_seqs": 64}}}
    # a flag key set again moves after the others: the planner lets the later key of an option win
    assert list(merge_layers([{"s": {"flags": {"a": 1, "b": 2}}}, {"s": {"flags": {"a": 3}}}])["s"]["flags"]) == ["b", "a"]


def test_null_removes_on_purpose():
    lower = {"s": {"port": 8100}, "t": {"port": 8200}}
    assert merge_layers([lower, {"s": None}]) == {"t": {"port": 8200}}  # a service's overrides dropped
    assert merge_layers([lower, None, {"u": {"port": 1}}]) == {"u": {"port": 1}}  # every lower layer's dropped
    assert merge_layers([lower, {"s": {"served_model_name": None}}])["s"] == {"port": 8100, "served_model_name": None}


def test_one_layer_or_a_value_that_is_no_mapping_is_left_as_given():
    only = {"s": {"port": 8100, "flags": {"a": 1}}}
    assert merge_layers([only]) == only and merge_layers([only]) is not only
    assert merge_layers([only, 5]) == 5  # the planner refuses it, naming the key


INVENTORY = '''
_d = {{"hardware": "atlas-800-a2", "workloads": ["qwen3"], "image_store": {store!r}}}
a2_nodes = ([("a2-01", {{**_d, "service_overrides": {{"qwen3-30b": {{"flags": {{"max-num-seqs": 48}}}}}},
                         "secrets": {{"host": "h"}}}}),
             ("a2-02", _d)],
            {{"service_overrides": {{"*": {{"env": {{"FOO": "group"}}}}, "qwen3-30b": {{"port": 8100}}}},
              "secrets": {{"group": "g", "host": "from-group"}}, "jemalloc": True}})
'''


@pytest.fixture()
def inventory(tmp_path) -> Path:
    path = tmp_path / "inventory.py"
    path.write_text(INVENTORY.format(store=image_store()))
    return path


def test_data_adds_to_the_groups_and_the_hosts_overrides(inventory):
    data = {"service_overrides": {"qwen3-30b": {"flags": {"max_num_seqs": 64}}}, "secrets": {"run": "r"},
            "jemalloc": False}
    hosts = dict(loaded_hosts(inventory, data))
    assert hosts["a2-01"]["service_overrides"] == {
        "*": {"env": {"FOO": "group"}}, "qwen3-30b": {"port": 8100, "flags": {"max-num-seqs": 48, "max_num_seqs": 64}}}
    assert hosts["a2-01"]["secrets"] == {"group": "g", "host": "h", "run": "r"}
    assert hosts["a2-01"]["jemalloc"] is False  # any other key: pyinfra's, the higher layer replacing
    plans = {p.host: p for p in plan_inventory(list(hosts.items()), ["qwen3"])}
    args = list(plans["a2-01"].services[0].serve_args)
    assert args[args.index("--port") + 1] == "8100" and args.count("--max-num-seqs") == 1
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert plans["a2-02"].services[0].spec.env["FOO"] == "group"


def test_without_data_each_host_reads_what_its_layers_say(inventory):
    hosts = dict(loaded_hosts(inventory))
    assert hosts["a2-02"]["service_overrides"] == {"*": {"env": {"FOO": "group"}}, "qwen3-30b": {"port": 8100}}
    assert hosts["a2-02"]["secrets"] == {"group": "g", "host": "from-group"}
    assert hosts["a2-01"]["secrets"] == {"group": "g", "host": "h"}
