"""Hardware configs: every shipped config, the per-version facts, AIMET's form, bad files."""

from __future__ import annotations

import json

import pytest

from onnxq import ConfigError, available_configs, load_config
from onnxq.sim.hwconfig import EncodingConstraint, HardwareConfig, config_path

SHIPPED = [
    "default",
    "per_channel",
    "htp_v66",
    "htp_v68",
    "htp_v69",
    "htp_v73",
    "htp_v75",
    "htp_v79",
    "htp_v81",
    "htp_v85",
]


def test_all_shipped_configs_exist_and_load():
    assert sorted(available_configs()) == sorted(SHIPPED)
    for name in SHIPPED:
        cfg = load_config(name)
        assert isinstance(cfg, HardwareConfig) and cfg.name == name
        # common to every config: symmetric weights, asymmetric activations, float bias,
        # BN statistics never quantized, Cast outputs left alone, inputs quantized
        assert cfg.defaults.params.is_symmetric is True
        assert cfg.defaults.activation_symmetric is False
        assert cfg.params["bias"].is_quantized is False
        bn = cfg.op("BatchNormalization").params
        assert bn["running_mean"].is_quantized is False and bn["running_var"].is_quantized is False
        assert cfg.op("Cast").is_output_quantized is False
        assert cfg.model_input_quantized is True and cfg.model_output_quantized is None
        assert not cfg.defaults.strict_symmetric and not cfg.defaults.unsigned_symmetric
        assert cfg.defaults.per_channel_quantization is False
        assert cfg.defaults.supported_kernels is None


PER_CHANNEL_OPS = {
    "default": set(),
    "per_channel": {"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"},
    "htp_v66": set(),
    "htp_v68": {"Conv", "ConvTranspose", "PRelu"},
    "htp_v69": {"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"},
    **{
        f"htp_v{v}": {"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"}
        for v in (73, 75, 79, 81, 85)
    },
}


@pytest.mark.parametrize("name", SHIPPED)
def test_per_channel_ops_per_version(name):
    cfg = load_config(name)
    assert {op for op in cfg.op_types if cfg.per_channel(op)} == PER_CHANNEL_OPS[name]
    assert cfg.per_channel("Add") is False


@pytest.mark.parametrize("name", SHIPPED)
def test_hw_version_passes_and_supergroups_per_version(name):
    cfg = load_config(name)
    version = cfg.hw_version_number
    if name in ("default", "per_channel"):
        assert version is None
        assert cfg.supergroup_pass_list == ("MatmulAdd",)
        assert set(cfg.supergroups) == {
            ("Conv", "Relu"),
            ("ConvTranspose", "Relu"),
            ("Conv", "Clip"),
            ("Add", "Relu"),
            ("Gemm", "Relu"),
        }
        return
    assert cfg.defaults.hw_version == f"V{version}" and name == f"htp_v{version}"
    if version == 66:
        assert cfg.supergroup_pass_list == ()
    else:
        assert set(cfg.supergroup_pass_list) == {
            "LayerNormalization",
            "RMSNormalization",
            "MatmulAdd",
        }
    if version < 73:
        assert set(cfg.supergroups) == {
            ("ConvTranspose", "Relu"),
            ("Add", "Relu"),
            ("Gemm", "Relu"),
        }
    else:
        assert len(cfg.supergroups) == 14
        assert ("Conv", "BatchNormalization", "HardSwish") in cfg.supergroups
        assert ("Conv", "Transpose", "LeakyRelu") in cfg.supergroups
        assert ("Conv", "Clip") in cfg.supergroups


@pytest.mark.parametrize("name", [n for n in SHIPPED if n.startswith("htp")])
def test_fixed_ranges_and_op_overrides_per_version(name):
    cfg = load_config(name)
    version = cfg.hw_version_number
    assert cfg.op("Relu").encoding_constraints == EncodingConstraint(0.0, None)
    for op in ("Sin", "Cos", "Tanh"):
        assert cfg.op(op).encoding_constraints == EncodingConstraint(-1.0, 1.0)
    for op in ("Sigmoid", "Softmax"):
        expected = EncodingConstraint(0.0, 1.0) if version >= 73 else None
        assert cfg.op(op).encoding_constraints == expected
    assert cfg.op("LayerNormalization").params["weight"].is_symmetric is False
    for op in ("InstanceNormalization", "RMSNormalization"):
        weight = cfg.op(op).params.get("weight")
        assert (weight is not None and weight.is_symmetric is False) == (version >= 68)
    gn_bias = cfg.op("GroupNormalization").params.get("bias")
    assert (gn_bias is not None and gn_bias.is_quantized) == (version >= 73)
    assert (cfg.op("Flatten").is_output_quantized is False) == (version == 66)
    for op in ("Gather", "NonMaxSuppression", "ChannelShuffle"):
        assert cfg.op(op).is_output_quantized is False


def test_v73_to_v85_differ_only_in_hw_version_and_the_measured_hardswish_fusion():
    base = load_config("htp_v73").to_dict()
    for v in (75, 79, 81, 85):
        other = load_config(f"htp_v{v}").to_dict()
        assert other["defaults"].pop("hw_version") == f"V{v}"
        b = json.loads(json.dumps(base))
        b["defaults"].pop("hw_version")
        for doc in (other, b):
            doc["onnxq"].pop("notes")
        if v == 85:  # arch 85 does not fuse Conv + HardSwish (measured); Add + Clip it does
            b["onnxq"].pop("output_max_floors")
            b["onnxq"]["unrounded_chains"] = [{"op_list": ["Add", "Clip"]}]
        assert other == b


@pytest.mark.parametrize("name", SHIPPED)
def test_to_dict_round_trips_and_matches_the_file(name):
    cfg = load_config(name)
    assert load_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    on_disk = json.loads(config_path(name).read_text())
    assert cfg.to_dict() == on_disk  # the shipped files are in AIMET's canonical form


# A config written the way AIMET writes its own (string booleans, older keys), plus JSON
# booleans where our design prefers them: both must load unchanged.
AIMET_STYLE = {
    "defaults": {
        "hw_version": "V79",
        "ops": {"is_output_quantized": "True"},
        "params": {"is_quantized": "True", "is_symmetric": "True"},
        "per_channel_quantization": "True",
        "strict_symmetric": "False",
        "unsigned_symmetric": "False",
        "supported_kernels": [
            {
                "activation": {"bitwidth": 16, "dtype": "int"},
                "param": {"bitwidth": 8, "dtype": "int"},
            },
        ],
    },
    "params": {"bias": {"is_quantized": "False"}},
    "op_type": {
        "Squeeze": {"is_output_quantized": "False"},
        "Gemm": {"per_channel_quantization": "False"},
        "Softmax": {"encoding_constraints": {"min": 0.0, "max": 1.0}},
        "Concat": {"is_input_quantized": "True"},
        "MatMul": {"supported_kernels": [{"activation": {"bitwidth": 16, "dtype": "int"}}]},
    },
    "supergroups": [{"op_list": ["Conv", "Relu"]}],
    "model_input": {"is_input_quantized": "True"},
    "model_output": {},
}


def test_the_onnxq_block_is_read_and_aimet_compatible_drops_it():
    cfg = load_config("htp_v68")
    assert cfg.depthwise_supergroups
    assert cfg.onnxq_supergroups == (("Conv", "Relu"), ("Conv", "Clip"))
    assert "8.5 dB" in (cfg.notes or "")
    plain = load_config("htp_v68", aimet_compatible=True)
    assert not plain.depthwise_supergroups and plain.onnxq_supergroups == ()
    assert "onnxq" not in plain.to_dict()  # what AIMET itself would load
    assert cfg.supergroups == plain.supergroups  # AIMET's own list is untouched


def test_output_max_floors_are_read_per_htp_version_and_round_trip():
    versions = (66, 68, 69, 73, 75, 79, 81, 85)
    fused = {v: load_config(f"htp_v{v}").output_max_floors for v in versions}
    # measured: arch 73-81 fuse Conv + HardSwish with the faulty kernel, the others do not fuse
    assert {v for v, f in fused.items() if f} == {73, 75, 79, 81}
    assert fused[73] == ((("Conv", "HardSwish"), 3.0),)
    cfg = load_config("htp_v73")
    assert load_config(cfg.to_dict()).output_max_floors == cfg.output_max_floors
    assert load_config("htp_v73", aimet_compatible=True).output_max_floors == ()


def test_unrounded_chains_are_the_fusing_versions_and_round_trip():
    versions = (66, 68, 69, 73, 75, 79, 81, 85)
    chains = {v: load_config(f"htp_v{v}").unrounded_chains for v in versions}
    # measured: arch 73-81 fuse Conv + HardSwish and ignore the Q/DQ between them; every
    # arch fuses Add + Clip the same way
    assert {v for v, c in chains.items() if ("Conv", "HardSwish") in c} == {73, 75, 79, 81}
    assert chains[73] == (("Conv", "HardSwish"), ("Add", "Clip"))
    assert all(c[-1] == ("Add", "Clip") for c in chains.values())
    cfg = load_config("htp_v73")
    assert load_config(cfg.to_dict()).unrounded_chains == cfg.unrounded_chains
    assert load_config("htp_v73", aimet_compatible=True).unrounded_chains == ()
    assert load_config("per_channel").unrounded_chains == ()


def test_every_htp_config_fixes_hardsigmoid_to_0_1_unless_aimet_compatible():
    from onnxq.sim.hwconfig import EncodingConstraint  # noqa: PLC0415

    for v in (66, 68, 69, 73, 75, 79, 81, 85):
        cfg = load_config(f"htp_v{v}")
        assert cfg.onnxq_constraints == {"HardSigmoid": EncodingConstraint(0.0, 1.0)}
        assert cfg.op("HardSigmoid").encoding_constraints is None  # AIMET's part untouched
        assert load_config(cfg.to_dict()).onnxq_constraints == cfg.onnxq_constraints
        assert load_config(f"htp_v{v}", aimet_compatible=True).onnxq_constraints == {}


def test_aimet_style_file_loads_unchanged(tmp_path):
    path = tmp_path / "htp_quantsim_config_custom.json"
    path.write_text(json.dumps(AIMET_STYLE, indent=2))
    cfg = load_config(path)
    assert cfg.path == path and cfg.defaults.hw_version == "V79"
    assert cfg.per_channel("Conv") is True and cfg.per_channel("Gemm") is False
    assert cfg.op("Concat").is_input_quantized is True
    assert cfg.defaults.supported_kernels[0].activation.bitwidth == 16
    assert cfg.op("MatMul").supported_kernels[0].param is None
    assert cfg.supergroup_pass_list == ()
    json_bools = json.loads(
        json.dumps(AIMET_STYLE).replace('"True"', "true").replace('"False"', "false")
    )
    assert load_config(json_bools).to_dict() == cfg.to_dict()


def _with(path: list[str], value, base=None):
    doc = json.loads(json.dumps(base or AIMET_STYLE))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            _with(["op_type", "Conv"], {"per_chanel_quantization": "True"}),
            r"op_type.Conv.per_chanel_quantization: unknown key; did you mean "
            r"'per_channel_quantization'\?",
        ),
        (_with(["extra_section"], {}), r"extra_section: unknown key"),
        (
            _with(["defaults", "params", "is_quantized"], "yes"),
            r'defaults.params.is_quantized: must be "True"/"False" or true/false, got "yes"',
        ),
        (
            _with(["defaults", "per_channel_quantization"], 1),
            r"defaults.per_channel_quantization: must be",
        ),
        (
            _with(["op_type", "Softmax", "encoding_constraints", "min"], "0"),
            r"op_type.Softmax.encoding_constraints.min: must be a number",
        ),
        (
            _with(["op_type", "Softmax", "encoding_constraints"], {"max": 1.0}),
            r"op_type.Softmax.encoding_constraints.min: is missing",
        ),
        (
            _with(["op_type", "Softmax", "encoding_constraints"], {"min": 1.0, "max": 0.0}),
            r"encoding_constraints.max: must be greater than min",
        ),
        (_with(["op_type", "Gemm"], []), r"op_type.Gemm: must be an object, got a list"),
        (
            _with(["defaults", "supported_kernels", 0, "param", "bitwidth"], 12),
            r"defaults.supported_kernels\[0\].param.bitwidth: must be one of \(4, 8, 16, 32\)",
        ),
        (
            _with(
                ["defaults", "supported_kernels", 0],
                {"activation": {"bitwidth": 8, "dtype": "int"}},
            ),
            r"defaults.supported_kernels\[0\]: needs a 'param'",
        ),
        (
            _with(["supergroups"], [{"op_list": ["Conv"]}]),
            r"supergroups\[0\].op_list: needs at least 2 op types",
        ),
        (
            _with(["supergroup_pass_list"], ["FuseEverything"]),
            r"supergroup_pass_list\[0\]: unknown pass 'FuseEverything'",
        ),
        (_with(["defaults"], _DELETE), r"defaults: is missing"),
        (_with(["defaults", "ops"], _DELETE), r"defaults.ops: is missing"),
        (
            _with(["model_input", "is_input_quantized"], "False"),
            r"model_input.is_input_quantized: only 'True' is allowed here",
        ),
        (
            _with(["op_type", "Concat", "is_input_quantized"], "False"),
            r"op_type.Concat.is_input_quantized: only 'True'",
        ),
        (_with(["defaults", "hw_version"], 73), r"defaults.hw_version: must be a string"),
        (
            _with(["onnxq"], {"fuse_all": "True"}),
            r"onnxq.fuse_all: unknown key; allowed here: depthwise_supergroups",
        ),
        (
            _with(["onnxq"], {"supergroups": [{"op_list": ["Conv"]}]}),
            r"onnxq.supergroups\[0\].op_list: needs at least 2 op types",
        ),
        (
            _with(["onnxq"], {"output_max_floors": [{"op_list": ["Conv", "HardSwish"]}]}),
            r"onnxq.output_max_floors\[0\]: needs an 'op_list' and a 'max'",
        ),
        (
            _with(["onnxq"], {"output_max_floors": [{"op_list": ["HardSwish"], "max": "3"}]}),
            r"onnxq.output_max_floors\[0\].max: must be a positive number, got '3'",
        ),
        (
            _with(["onnxq"], {"output_max_floors": [{"op_list": [], "max": 3}]}),
            r"onnxq.output_max_floors\[0\].op_list: needs at least 1 op type",
        ),
        (
            _with(["onnxq"], {"unrounded_chains": [{"op_list": ["HardSwish"]}]}),
            r"onnxq.unrounded_chains\[0\].op_list: needs at least 2 op types",
        ),
        (
            _with(["onnxq"], {"encoding_constraints": {"HardSigmoid": {"max": 1.0}}}),
            r"onnxq.encoding_constraints.HardSigmoid.min: is missing",
        ),
        ([1, 2], r"<top level>: must be an object"),
    ],
)
def test_bad_configs_name_the_file_and_the_key_path(tmp_path, doc, message):
    path = tmp_path / "bad_config.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_invalid_json_and_unknown_alias(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"defaults": {\n "ops": {}\n')
    with pytest.raises(ConfigError, match=r"broken.json: not valid JSON \(line 3"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"config 'htp_v74' is neither.*did you mean"):
        load_config("htp_v74")
    with pytest.raises(ConfigError, match="nor an existing file"):
        load_config(tmp_path / "missing.json")


def test_aliases_are_case_insensitive_and_none_means_default():
    assert load_config("HTP_V73").name == "htp_v73"
    assert load_config(None).name == "default"
    assert load_config("per_channel.json").name == "per_channel"
    cfg = load_config("htp_v69")
    assert load_config(cfg) is cfg
