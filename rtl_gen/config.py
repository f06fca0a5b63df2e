"""The accelerator config: one YAML schema, validated on load, every derived value once.

An accelerator is described by one YAML file (examples in ``rtl_gen/configs/``). The
same :class:`AcceleratorConfig` object drives hardware elaboration, the reference
model, operand packing, simulation, reports and board builds: derived quantities
(vector widths, beats per vector, product width...) are properties here and nowhere else.

Loading never raises a traceback at the user: every problem becomes a
:class:`~ref_model.errors.ConfigError` naming the field path, the bad value and what
is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hw.mem.gearbox import packing
from ref_model.errors import ConfigError
from ref_model.formats import IntFormat, product_format

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = "systolic_8x8_int8.yaml"


#: Resources of the ECP5 parts a config may target (Lattice DS1044 family table).
DEVICE_RESOURCES = {
    "LFE5U-25F": {"lut4": 24288, "ff": 24288, "dsp": 28, "bram": 56},
    "LFE5U-45F": {"lut4": 43848, "ff": 43848, "dsp": 72, "bram": 108},
    "LFE5U-85F": {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208},
    "LFE5UM-85F": {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208},
    "LFE5UM5G-85F": {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208},
}


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default);
    # strict types stop "8" from passing as 8 or 1 as true.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Dataflow = Literal["output_stationary", "weight_stationary"]


class OperandType(_Strict):
    """An integer operand format."""

    bits: Annotated[int, Field(ge=2, le=16, description="operand width in bits")]
    signed: bool = True

    @property
    def format(self) -> IntFormat:
        return IntFormat(self.bits, self.signed)


class SystolicCoreConfig(_Strict):
    """The systolic tensor core: array shape, operand types, accumulator and buffers."""

    kind: Literal["systolic"] = "systolic"
    rows: Annotated[int, Field(ge=1, le=64)]
    cols: Annotated[int, Field(ge=1, le=64)]
    dataflow: Dataflow = "output_stationary"
    act: OperandType = OperandType(bits=8, signed=True)
    weight: OperandType = OperandType(bits=8, signed=True)
    acc_bits: Annotated[int, Field(ge=4, le=48, description="accumulator width; sums wrap modulo 2**acc_bits")]
    overflow: Literal["wrap"] = "wrap"
    edge_pipeline: Annotated[int, Field(ge=0, le=4, description="extra register stages on the array's input and output edges")] = 0
    k_max: Annotated[int, Field(ge=1, le=65536, description="output-stationary: depth of the activation block buffer = largest K")] = 1024
    row_blocks: Annotated[int, Field(ge=1, le=16, description="output-stationary: R-row blocks of A that share each W tile read from memory (divides W traffic)")] = 2
    m_tile: Annotated[int, Field(ge=1, le=65536, description="weight-stationary: accumulator buffer depth = rows of C per pass")] = 256
    dsp_budget: Annotated[Annotated[int, Field(ge=0)] | Literal["auto"], Field(description="PEs whose multiplier maps to a DSP block; the rest are built from LUTs. auto = the target part's DSP count")] = "auto"

    @model_validator(mode="after")
    def _acc_holds_a_product(self):
        if self.m_tile & (self.m_tile - 1):
            raise ValueError(f"m_tile={self.m_tile} is not a power of two; allowed: 1, 2, 4, ... 65536")
        prod = self.act.bits + self.weight.bits
        if self.acc_bits < prod:
            raise ValueError(
                f"acc_bits={self.acc_bits} is narrower than one {self.act.bits}x{self.weight.bits}-bit "
                f"product ({prod} bits); allowed: acc_bits >= {prod}")
        return self


class LutCoreConfig(_Strict):
    """The LUT tensor core (:class:`hw.cores.lut.LutCore`): table lookup over weight bit planes.

    One cycle looks up ``rows x cols x k_groups`` tables (``k_tile = g * k_groups``
    activations of each of ``rows`` rows against one weight bit plane of ``cols``
    columns); planes are combined bit-serially, so one core serves W1..``weight_bits``
    and ternary (the precision is a field of each command). See ``docs/lut.md``.
    """

    kind: Literal["lut"] = "lut"
    rows: Annotated[int, Field(ge=1, le=8, description="rows of A (M) processed at once, each with its own tables")]
    cols: Annotated[int, Field(ge=1, le=64, description="output columns (N) that read every table at once (the elongated tile)")]
    k_groups: Annotated[int, Field(ge=1, le=16, description="activation groups (tables) per row per cycle")] = 2
    g: Annotated[int, Field(ge=2, le=4, description="activations per table")] = 4
    symmetric: bool = Field(True, description="table symmetrization: store 2**(g-1) entries, not 2**g")
    act: OperandType = OperandType(bits=8, signed=True)
    weight_bits: Annotated[int, Field(ge=1, le=4, description="most weight bit planes a command may use (W1..W4)")] = 4
    group_size: Annotated[int, Field(ge=1, le=4096, description="weights per quant group along K (one f16 scale and zero point per group and column)")] = 32
    frac: Annotated[int, Field(ge=0, le=30, description="fractional bits of C (group terms are rounded into Q.frac)")] = 8
    acc_bits: Annotated[int, Field(ge=8, le=48, description="accumulator width; sums wrap modulo 2**acc_bits")] = 32
    overflow: Literal["wrap"] = "wrap"
    rescale_units: Annotated[int, Field(ge=1, le=512, description="shared group-rescale units (multiplier + shifter); each serves rows*cols/rescale_units lanes, one per cycle")] = 1

    @model_validator(mode="after")
    def _consistent(self):
        lanes = self.rows * self.cols
        if lanes % self.rescale_units:
            raise ValueError(f"rescale_units={self.rescale_units} does not divide rows * cols = {lanes}; "
                             f"allowed: a divisor of {lanes}")
        if not self.act.signed:
            raise ValueError("act.signed=false: the LUT core takes signed activations; allowed: act.signed=true")
        if self.group_size % self.k_tile:
            raise ValueError(f"group_size={self.group_size} is not a multiple of k_tile = g * k_groups = "
                             f"{self.k_tile}; allowed: multiples of {self.k_tile}")
        return self

    # ---- derived values (read by hw, layout, reference and benches) ----
    @property
    def k_tile(self) -> int:
        """Activations per row per chunk (one table build, one plane step)."""
        return self.g * self.k_groups

    @property
    def table_entries(self) -> int:
        """Entries of one table: 2**(g-1) with symmetrization, else 2**g."""
        return 1 << (self.g - 1) if self.symmetric else 1 << self.g

    @property
    def table_depth(self) -> int:
        """Words of one table memory: two tables (double buffer: build one, read the other)."""
        return 2 * self.table_entries

    @property
    def entry_bits(self) -> int:
        """Signed width of an entry: |T| <= g * 2**(act_bits-1)."""
        return (self.g << (self.act.bits - 1)).bit_length() + 1

    @property
    def tables(self) -> int:
        """Table memories (one per row and group lane); each has ``cols`` read ports."""
        return self.rows * self.k_groups

    @property
    def plane_bits(self) -> int:
        """Signed width of one plane value v_i = sum of k_groups lookups +- S (|v| <= k_tile * 2**act_bits)."""
        return (self.k_tile << self.act.bits).bit_length() + 1

    @property
    def group_sum_bits(self) -> int:
        """Signed width of 2P over a quant group (|2P| <= group_size * 2**(act_bits + weight_bits))."""
        return (self.group_size << (self.act.bits + self.weight_bits)).bit_length() + 1

    @property
    def param_bits(self) -> int:
        """Bits of one column's group parameters in memory: f16 scale + weight_bits zero point."""
        return 16 + self.weight_bits

    @property
    def param_vectors(self) -> int:
        """W-stream vectors carrying one quant group's parameters (k_tile bits per column each)."""
        return -(-self.param_bits // self.k_tile)

    @property
    def build_cycles(self) -> int:
        """Cycles to write one table (one entry per cycle)."""
        return self.table_entries

    def chunk_cycles(self, wbits: int) -> int:
        """Cycles per chunk in steady state: planes read vs table build (double-buffered)."""
        return max(wbits, self.build_cycles)

    @property
    def drain_cycles(self) -> int:
        """Cycles the shared rescale units take per quant group (rows * cols / rescale_units)."""
        return self.rows * self.cols // self.rescale_units

    def group_cycles(self, wbits: int) -> int:
        """Cycles per quant group in steady state (a model): the W stream (parameter
        vectors + one plane vector per cycle), the table builds (one entry per cycle,
        overlapping the parameter vectors) or the rescale drain, whichever is longest."""
        chunks = self.group_size // self.k_tile
        return max(chunks * wbits + self.param_vectors, chunks * self.build_cycles, self.drain_cycles + 2)

    def peak_macs_per_cycle(self, wbits: int, ternary: bool = False) -> float:
        """Weight x activation products per cycle at full lookup rate (one chunk per
        ``chunk_cycles``; parameter vectors and rescale drains not counted)."""
        return self.rows * self.cols * self.k_tile / self.chunk_cycles(wbits)

    def sustained_macs_per_cycle(self, wbits: int) -> float:
        """Products per cycle over whole quant groups (parameters and drains counted)."""
        return self.rows * self.cols * self.group_size / self.group_cycles(wbits)

    def derived(self, cfg) -> dict:
        def pk(bits):
            return dict(zip(("slots", "beats_per_vector"), packing(bits, cfg.memory.data_bits)))
        a_bits = self.rows * self.k_tile * self.act.bits
        w_bits = self.cols * self.k_tile
        c_bits = self.cols * self.acc_bits
        return {"k_tile": self.k_tile, "tables": self.tables, "table_entries": self.table_entries,
                "table_depth": self.table_depth, "entry_bits": self.entry_bits,
                "table_read_ports": self.tables * self.cols,
                "table_bits": self.tables * self.table_depth * self.entry_bits,
                "plane_bits": self.plane_bits, "group_sum_bits": self.group_sum_bits,
                "param_vectors": self.param_vectors,
                "peak_macs_per_cycle": {f"w{b}": self.peak_macs_per_cycle(b) for b in range(1, self.weight_bits + 1)},
                "a_vector_bits": a_bits, "w_vector_bits": w_bits, "c_vector_bits": c_bits,
                "a_packing": pk(a_bits), "w_packing": pk(w_bits), "c_packing": pk(c_bits)}


class BitSerialCoreConfig(_Strict):
    """The bit-serial tensor core (BitMoD class): ``rows`` k-lanes x ``cols`` output columns.

    Weights arrive as a sign and up to ``max_planes`` magnitude bit-planes (the unified
    representation of every data type in :mod:`ref_model.formats`); one plane per cycle, so
    a GEMM's cycles scale with its weight planes, chosen per command. Group scales are f16,
    one per group of G consecutive k and column (G per command, from ``group_sizes``),
    applied by a dequantization unit (digit-serial multiplier per column, one shared
    shift-and-add stage)
    (:func:`ref_model.formats.group_rescale`, results in ``Q.out_frac``); the sum over
    groups wraps at ``acc_bits``.
    """

    kind: Literal["bitserial"] = "bitserial"
    rows: Annotated[int, Field(ge=1, le=32, description="k-lanes per column: activations reduced per cycle (power of two)")]
    cols: Annotated[int, Field(ge=1, le=64, description="output columns (N direction)")]
    act: OperandType = OperandType(bits=8, signed=True)
    max_planes: Annotated[int, Field(ge=1, le=8, description="most weight magnitude bit-planes a command may use")] = 8
    group_sizes: list[Literal[32, 64, 128]] = [32, 64, 128]
    k_max: Annotated[int, Field(ge=32, le=16384, description="largest K (the on-chip weight panel holds K x cols)")] = 2048
    out_frac: Annotated[int, Field(ge=0, le=24, description="fraction bits of the outputs (Q.out_frac)")] = 8
    acc_bits: Annotated[int, Field(ge=16, le=48, description="output accumulator width; sums over groups wrap")] = 32
    dequant_digit_bits: Annotated[int, Field(ge=1, le=11, description="scale mantissa bits each column's dequantization multiplier takes per cycle")] = 2

    @model_validator(mode="after")
    def _consistent(self):
        if self.rows & (self.rows - 1):
            raise ValueError(f"rows={self.rows} is not a power of two; allowed: 1, 2, 4, 8, 16, 32")
        if not self.act.signed:
            raise ValueError("act.signed=false: the bit-serial core takes signed activations; allowed: true")
        if not self.group_sizes:
            raise ValueError("group_sizes is empty; allowed: a list of 32, 64, 128")
        if min(self.group_sizes) < self.rows:
            raise ValueError(f"group_sizes={list(self.group_sizes)} has a group smaller than rows={self.rows}")
        if self.k_max % max(self.group_sizes):
            raise ValueError(f"k_max={self.k_max} is not a multiple of the largest group {max(self.group_sizes)}")
        return self

    def peak_macs_per_cycle(self, wbits: int, ternary: bool = False) -> float:
        """Peak products per cycle at ``wbits``-bit weights stored as sign + magnitude planes
        (asymmetric INT-n: ``n`` planes; ternary: one): rows x cols per plane cycle."""
        planes = 1 if ternary else wbits
        if not 1 <= planes <= self.max_planes:
            raise ValueError(f"{planes} weight planes are outside 1..max_planes={self.max_planes}")
        return self.rows * self.cols / planes

    @property
    def min_group_cycles(self) -> int:
        """Cycles between two group ends at the fastest (one plane, smallest group)."""
        return min(self.group_sizes) // self.rows

    @property
    def dequant_cycles(self) -> int:
        """Cycles between two groups the dequantization unit can take: its multiplier
        needs ceil(11 / digit bits), its shared shift-and-add stage one per column. Groups
        that end faster (fewer cycles than this per group: small G, few planes) stall the array."""
        return max(-(-11 // self.dequant_digit_bits), self.cols)

    @property
    def tree_bits(self) -> int:
        """Signed width of one plane's adder-tree sum of ``rows`` terms +-a (|S| <= rows *
        2**(act-1), reached when -a of the most negative activation is summed: one bit more)."""
        return self.act.bits + 1 + max(0, (self.rows - 1).bit_length())

    @property
    def partial_bits(self) -> int:
        """Signed width of a group partial sum P (|P| < 2**(act-1) * 2**max_planes * G)."""
        return self.act.bits + self.max_planes + (max(self.group_sizes) - 1).bit_length()

    @property
    def k_blocks_max(self) -> int:
        return self.k_max // self.rows

    @property
    def groups_max(self) -> int:
        return self.k_max // min(self.group_sizes)

    def derived(self, cfg) -> dict:
        def pk(bits):
            return dict(zip(("slots", "beats_per_vector"), packing(bits, cfg.memory.data_bits)))
        return {"lanes": self.rows * self.cols, "a_vector_bits": self.rows * self.act.bits,
                "plane_vector_bits": self.rows * self.cols, "scale_vector_bits": 16 * self.cols,
                "c_vector_bits": self.cols * self.acc_bits, "tree_bits": self.tree_bits,
                "partial_bits": self.partial_bits, "dequant_cycles": self.dequant_cycles,
                "a_packing": pk(self.rows * self.act.bits), "w_packing": pk(self.rows * self.cols),
                "s_packing": pk(16 * self.cols), "c_packing": pk(self.cols * self.acc_bits)}


#: The ``core`` section: one schema class per core kind, chosen by its ``kind`` key.
#: A new core kind adds its class here; kind-specific derived values are properties
#: of that class, shared ones (memory port, device) stay on AcceleratorConfig.
CoreConfig = Annotated[SystolicCoreConfig | BitSerialCoreConfig | LutCoreConfig, Field(discriminator="kind")]


def core_kinds() -> list[str]:
    """The values ``core.kind`` may take."""
    members = get_args(get_args(CoreConfig)[0]) or (get_args(CoreConfig)[0],)
    return [get_args(m.model_fields["kind"].annotation)[0] for m in members]


class SimMemoryConfig(_Strict):
    """The AXI4 memory model used in simulation (on boards, the DRAM controller)."""

    latency: Annotated[int, Field(ge=1, le=1024, description="cycles from AR/AW accept to first beat")] = 16
    read_beats_per_cycle: Annotated[float, Field(gt=0, le=1)] = 1.0
    write_beats_per_cycle: Annotated[float, Field(gt=0, le=1)] = 1.0
    size_bytes: Annotated[int, Field(ge=4096, le=1 << 31)] = 1 << 24
    refresh_period: Annotated[int, Field(ge=0, le=1 << 20, description="cycles between refresh stalls; 0 = none")] = 0
    refresh_cycles: Annotated[int, Field(ge=0, le=1 << 16, description="cycles each refresh stall lasts")] = 0
    stall_percent: Annotated[int, Field(ge=0, le=90, description="random back-pressure on every AXI channel, % of cycles")] = 0
    stall_seed: Annotated[int, Field(ge=1, le=(1 << 31) - 1)] = 1


class MemoryConfig(_Strict):
    """The external memory port (AXI4)."""

    data_bits: Annotated[int, Field(description="AXI data width: 32, 64, 128, 256 or 512")] = 128
    addr_bits: Annotated[int, Field(ge=16, le=64)] = 32
    max_burst: Annotated[int, Field(ge=1, le=256, description="beats per AXI4 INCR burst")] = 16
    outstanding: Annotated[int, Field(ge=1, le=64, description="read bursts in flight per reader")] = 4
    dram_mhz: Annotated[float | None, Field(ge=25, le=100, description=(
        "a board build's DRAM controller clock in MHz (default: the board's LiteDRAM description); "
        "a large design may need a slower one to meet timing"))] = None
    sim: SimMemoryConfig = SimMemoryConfig()

    @field_validator("data_bits")
    @classmethod
    def _legal_width(cls, v):
        if v not in (32, 64, 128, 256, 512):
            raise ValueError("not an AXI data width; allowed: 32, 64, 128, 256, 512")
        return v


class ClockConfig(_Strict):
    mhz: Annotated[float, Field(gt=0, le=1000)] = 100.0


class TargetConfig(_Strict):
    """The FPGA part that reports and bitstreams target."""

    family: Literal["ecp5"] = "ecp5"
    device: Literal["LFE5U-25F", "LFE5U-45F", "LFE5U-85F", "LFE5UM-85F", "LFE5UM5G-85F"] = "LFE5U-85F"
    package: str = "CABGA381"
    #: nextpnr's speed grade of the part: 6 is the slowest (nextpnr's default; the ULX3S's
    #: part), 8 the fastest (the DDR3 boards that hold SmolLM2: ECPIX-5, ButterStick,
    #: OrangeCrab 85F). Reports use it; board builds use the board's own grade.
    speed: Literal[6, 7, 8] = 6
    board: str | None = None


class DecodeLimits(_Strict):
    """The largest llama shape the decode engine runs (its buffers and unit sizes); a
    model within these runs on the same bitstream (shapes are program data)."""

    layers: Annotated[int, Field(ge=1, le=255)]
    dim: Annotated[int, Field(ge=32, le=8192, multiple_of=32)]
    ffn: Annotated[int, Field(ge=32, le=16384, multiple_of=32)]
    heads: Annotated[int, Field(ge=1, le=63)]
    kv_heads: Annotated[int, Field(ge=1, le=63)]
    head_dim: Annotated[int, Field(ge=2, le=256, multiple_of=2)]
    vocab: Annotated[int, Field(ge=2, le=131071)]
    context: Annotated[int, Field(ge=1, le=16383)]

    @model_validator(mode="after")
    def _gqa(self):
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        return self


class DecodeConfig(_Strict):
    """The decode engine: shape limits and the integer numerics it is built for
    (:class:`ref_model.decode.DecodeNumerics` fields; omitted ones take its defaults)."""

    limits: DecodeLimits
    numerics: dict[str, int | str] = {}
    #: channels per cycle of the KV read / attention path; the attention unit holds
    #: ``heads/kv_heads x lanes`` 18 x 32-bit multipliers (2 MULT18X18D each) and its score
    #: and value phases take ``n*kv_heads*head_dim/lanes`` cycles each. Default: the most
    #: the head_dim allows (:func:`ref_model.decode.attention_lanes`, up to 32).
    lanes: Annotated[int, Field(ge=1, le=32, description="attention lanes: channels per cycle of the KV read / "
                                "attention path (power of two dividing head_dim, at least memory.data_bits/32); "
                                "fewer lanes = fewer DSP multipliers, slower attention. Default: the most the "
                                "head_dim allows (up to 32)")] | None = None
    #: matvec lanes (of 32) whose 12 x 9-bit product is built from LUTs instead of taking a
    #: whole MULT18X18D: trades ~200 LUT4 per lane for one DSP (same numerics and timing)
    matvec_lut_lanes: Annotated[int, Field(ge=0, le=32, description="matvec lanes (of 32) whose product is "
                                           "built from LUTs instead of a DSP block (about 200 LUT4 each)")] = 0

    @model_validator(mode="after")
    def _numerics_valid(self):
        from ref_model.decode import DecodeNumerics
        try:
            num = DecodeNumerics.from_dict(dict(self.numerics))
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if self.lanes is not None and (self.lanes & (self.lanes - 1) or self.limits.head_dim % self.lanes):
            raise ValueError(f"decode.lanes={self.lanes} must be a power of two dividing limits.head_dim="
                             f"{self.limits.head_dim}; allowed: 1, 2, 4, ... up to 32")
        if num.k_group & (num.k_group - 1):
            raise ValueError(f"numerics.k_group={num.k_group} is not a power of two; allowed: 1, 2, 4, ... 1024")
        if num.act_scale_bits < 2 or num.kv_scale_bits < 2:
            raise ValueError("numerics.act_scale_bits and kv_scale_bits must be 2..12 for the engine "
                             "(mantissa scales); allowed: 2..12")
        return self

    def decode_numerics(self):
        from ref_model.decode import DecodeNumerics
        return DecodeNumerics.from_dict(dict(self.numerics))

    def shape_limits(self):
        """The limits as a :class:`ref_model.decode.DecodeShape` (what the program
        compiler checks a model against)."""
        from ref_model.decode import DecodeShape
        L = self.limits
        return DecodeShape(L.layers, L.dim, L.heads, L.kv_heads, L.head_dim, L.ffn, L.vocab, L.context)


class AcceleratorConfig(_Strict):
    """One accelerator: the whole YAML file."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    core: CoreConfig
    memory: MemoryConfig = MemoryConfig()
    clock: ClockConfig = ClockConfig()
    target: TargetConfig = TargetConfig()
    decode: DecodeConfig | None = None

    @model_validator(mode="after")
    def _decode_port(self):
        if self.decode is not None and self.memory.data_bits not in (64, 128):
            raise ValueError(f"memory.data_bits={self.memory.data_bits}: the decode engine needs a 64- or "
                             f"128-bit port; allowed: 64, 128")
        if self.decode is not None and self.decode.lanes is not None and self.decode.lanes < self.memory.data_bits // 32:
            raise ValueError(f"decode.lanes={self.decode.lanes}: the KV unit reads whole {self.memory.data_bits}-bit "
                             f"beats of int32 channels; allowed: at least {self.memory.data_bits // 32}")
        return self

    @model_validator(mode="after")
    def _chunks_start_on_beats(self):
        # Weight-stationary row chunks of m_tile a-vectors must start on a beat boundary.
        if self.core.kind != "systolic":
            return self
        slots, _ = packing(self.a_vector_bits, self.memory.data_bits)
        if self.core.dataflow == "weight_stationary" and self.core.m_tile % slots:
            raise ValueError(f"core.m_tile={self.core.m_tile} must be a multiple of {slots}, the a-vectors "
                             f"per {self.memory.data_bits}-bit beat")
        return self

    # ---- derived values: computed here once, read everywhere ----
    @property
    def act_format(self) -> IntFormat:
        return self.core.act.format

    @property
    def weight_format(self) -> IntFormat:
        return self.core.weight.format

    @property
    def acc_format(self) -> IntFormat:
        return IntFormat(self.core.acc_bits, signed=True)

    @property
    def product_format(self) -> IntFormat:
        return product_format(self.act_format, self.weight_format)

    @property
    def pes(self) -> int:
        return self.core.rows * self.core.cols

    @property
    def a_lanes(self) -> int:
        """Activations per a-vector: one per array row (OS: M, WS: K direction)."""
        return self.core.rows

    @property
    def w_lanes(self) -> int:
        """Weights per w-vector: one per array column (N direction)."""
        return self.core.cols

    @property
    def a_vector_bits(self) -> int:
        return self.a_lanes * self.core.act.bits

    @property
    def w_vector_bits(self) -> int:
        return self.w_lanes * self.core.weight.bits

    @property
    def c_vector_bits(self) -> int:
        return self.core.cols * self.core.acc_bits

    @property
    def device_resources(self) -> dict[str, int]:
        return DEVICE_RESOURCES[self.target.device]

    @property
    def dsp_pes(self) -> int:
        """How many PEs get a DSP multiplier (row-major from PE (0, 0)); the rest use LUTs."""
        budget = self.device_resources["dsp"] if self.core.dsp_budget == "auto" else self.core.dsp_budget
        return min(self.pes, budget)

    @property
    def bytes_per_beat(self) -> int:
        return self.memory.data_bits // 8

    def derived(self) -> dict:
        """The derived values a manifest records (per core kind)."""
        if self.core.kind == "systolic":
            def pk(bits):
                return dict(zip(("slots", "beats_per_vector"), packing(bits, self.memory.data_bits)))
            return {"pes": self.pes, "dsp_pes": self.dsp_pes,
                    "a_vector_bits": self.a_vector_bits, "w_vector_bits": self.w_vector_bits,
                    "c_vector_bits": self.c_vector_bits, "product_bits": self.product_format.bits,
                    "a_packing": pk(self.a_vector_bits), "w_packing": pk(self.w_vector_bits),
                    "c_packing": pk(self.c_vector_bits)}
        return self.core.derived(self)

    def hash(self) -> str:
        """Stable short hash of the validated config (what a bitstream was built from).
        An absent optional section (``decode``) is left out, so adding sections to the
        schema does not change the hash of configs that do not use them."""
        text = json.dumps(self.model_dump(mode="json", exclude={"decode"} if self.decode is None else set()),
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def hash_bytes(self) -> bytes:
        """:meth:`hash` as the 8 bytes a bitstream reports over the host link (HELLO)."""
        return bytes.fromhex(self.hash())


# ---------------------------------------------------------------- loading ----------

def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        if len(loc) > 1 and loc[0] == "core" and loc[1] in core_kinds():
            del loc[1]  # pydantic names the union member; the user wrote core.FIELD
        path = ".".join(str(p) for p in loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            lines.append(f"{path}: unknown key (not part of the schema)")
            continue
        if kind == "missing":
            lines.append(f"{path}: required field is missing")
            continue
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            tag = e.get("ctx", {}).get("tag")
            what = f"{path}.kind={json.dumps(tag)}: unknown kind" if tag is not None else f"{path}.kind: required field is missing"
            lines.append(f"{what}; allowed: {', '.join(core_kinds())}")
            continue
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = e.get("input")
        if isinstance(value, (str, int, float, bool, type(None))):
            lines.append(f"{path}={json.dumps(value)}: {msg}")
        else:  # a whole-section check: the message names the fields itself
            lines.append(f"{path}: {msg}" if path else msg)
    return f"{source}: " + "; ".join(lines)


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. core.rows=8")
    path, text = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"--set {assignment!r}: empty key in path {path!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {k} is not a section")
        node = child
    node[keys[-1]] = value


def config_from_dict(data: Any, source: str = "config", overrides: list[str] = ()) -> AcceleratorConfig:
    """Validate a parsed YAML document (plus ``KEY.PATH=VALUE`` overrides)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with keys name, core, memory, clock, target; "
                          f"got {type(data).__name__}")
    data = json.loads(json.dumps(data))  # deep copy, and rejects non-JSON YAML oddities early
    for assignment in overrides:
        _apply_override(data, assignment)
    try:
        return AcceleratorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or the name of a shipped config in ``rtl_gen/configs``."""
    p = Path(name)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / str(name), CONFIG_DIR / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    shipped = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {str(name)!r} not found (neither a file nor a shipped config: {shipped})")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> AcceleratorConfig:
    """Load and validate a YAML config file (default: the shipped default config)."""
    p = resolve_config_path(path if path is not None else DEFAULT_CONFIG)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return config_from_dict(data, str(p), overrides)
