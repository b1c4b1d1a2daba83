"""Ensemble kernel for the CPU (numba): a group of trajectories in SIMD lanes, groups across cores.

Kernel source only: plain numpy arrays and scalars in, nothing of the library
imported. The launcher is `inertia_gpu.backends.numba_cpu`; the contract is
docs/CONVENTIONS.md.

Work split: `prange` over blocks of GROUPs; a thread advances one GROUP of 64
trajectories at a time through the whole step window. The group's state lives
in small [dim, 64] scratch arrays (L1-resident for the toy dimensions), so
every per-step operation is a loop over the 64 trajectories that the compiler
turns into SIMD instructions: Philox (32x32 -> 64 products in uint64 lanes,
the words kept as uint32 so the uniforms convert eight at a time), the normal
transform (log, sin, cos as polynomials below, no libm calls), the
integrator, the gradient and the recorded observables. One copy of the
dynamics serves every dimension: d = 1 is the same code with one coordinate.
The per-group code (`_advance_group`) is compiled without reference counting:
the scratch arrays it passes to its inlined helpers would otherwise cost an
atomic increment and decrement per array per step, contended on shared arrays.

Statistics: at a recorded step the observables are formed in float64 from the
state converted to float64 (so float32 runs stay right, and never compute
subnormal products, when inertia decays below the float32 range); first
passage compares I_n <= f I_0 in float64. A group's sums are formed by one
thread in a fixed order of its 64 lanes (eight interleaved partial sums, then a
fixed tree: SIMD adds): bitwise the same whatever the thread count or schedule.
For d = 1 (quadratic, double well) the record is one pass in explicit
float64x4 lanes (`_record_1`): observables, first passage (one compare per lane
against the largest threshold not yet passed, the lanes that pass marked in a
64-bit mask; only their blocks of four are written, after the pass) and the
partial sums of six columns kept in registers (lanes 8i..8i+3 in a first pass,
8i+4..8i+7 in a second), |v|^2, <v, g> and I^2 as fused multiply-adds; the
group's kinetic energy, inertia and residual are formed from its sums. A
recorded heavy-ball step (noise not loss-scaled) is one pass just before it
(update, gradient and ledger split, eight lanes at a time in the working dtype):
two passes over the group's state per step instead of four, and not one, since a
fused iteration's dependency chain, from the loads to I^2, is longer than
out-of-order execution overlaps. Every other case writes the summand rows and
sums them with the same partials and tree (`_row_sum`). Selects are values
stored unconditionally or blends: a select written back only where it changes
becomes a masked store, microcoded on AMD.

Ledger (docs/THEORY.md section 8): with a ledger state (float64 [count, 2], the
cumulative dissipated D and injected Q since step 0) the step adds, at its
friction + noise substep with friction factor a, momentum m and noise kick k
(working-dtype values), D += (1 - a^2) K(m) and Q += K(a m + k) - K(a m) in
float64 per lane (three fused multiply-adds, `_ledger_add`); a recorded state
adds D, Q and W = (I_n - I_0) + D - Q of its kept lanes to columns 6..8 (d = 1:
W = ((sum I_n - sum I_0) + sum D) - sum Q from the group's sums, as
docs/CONVENTIONS.md allows). Without it (None) the
kernel is a separate specialisation with none of that arithmetic, and columns
6..8 hold 0.0.

Divergence: at a recorded step a trajectory whose float64 inertia is not
<= the divergence threshold (NaN and inf fail too) gets a NaN state, so it
stays diverged, and is left out of every sum.

Noise: Philox4x32-10, one call per (trajectory, coordinate, four steps), all
four outputs used (lanes n % 4 of counter (trajectory, n // 4, coordinate,
TAG_STEP)); the transform is the CONVENTIONS Box-Muller of the same words,
log/sin/cos as polynomials in the working dtype (float32: short fused
multiply-add chains, `box_muller_words_f32`), so the normals agree with the
reference to a few ulps.

Per-step scalars (mu_n, gamma_n, the OU coefficients, noise scales) are
computed by the launcher in the working dtype exactly as the reference
computes them, and passed as a table `coef[n - step_begin, :]`; the kernel
does only the per-trajectory arithmetic, in the operation order of
`inertia_gpu.reference`. One compiled specialisation per dtype: the
integrator, problem and noise model are runtime integer switches.

Integer switches (copies of inertia_gpu/spec.py, checked by tests/test_spec.py):
    integrator  0 heavy-ball, 1 euler, 2 leapfrog, 3 baoab
    problem     0 quadratic, 1 double-well, 2 rosenbrock
    noise_model 0 additive, 1 temperature, 2 loss-scaled

coef columns per step (inertia_gpu/coefficients.py: DECAY, XI, SPREAD):
    heavy-ball  [mu_n, s_n (loss-scaled: noise), 1]
    euler       [h*gamma_n, sigma_n*sqrt(h) (loss-scaled: noise), sqrt(h)]
    leapfrog/baoab (O-step)  [c1_n, sigma_n*sqrt(var_n) (loss-scaled: noise), sqrt(var_n)]
The noise multiplier is XI, or (XI * sqrt(max(L, 0))) * SPREAD for the loss-scaled model.

Recording (table-driven): rec_row[n - step_begin] is the row of `out` that
receives the state after step n (-1: not recorded); init_row the row of the
initial state (-1: none).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, models, overload, register_model

GROUP = 64  # trajectories per group: the SIMD lanes of one thread's work item
N_QUANTITIES = 6  # count, inertia, kinetic, loss, shadow inertia, inertia^2
N_COLUMNS = 9  # the quantities, then the ledger: dissipated, injected, residual
COLUMN_DISSIPATED = 6
COLUMN_INJECTED = 7
COLUMN_RESIDUAL = 8
TAG_STEP = 0
TAG_INIT = 1

INTEGRATOR_HEAVY_BALL = 0
INTEGRATOR_EULER = 1
INTEGRATOR_LEAPFROG = 2
INTEGRATOR_BAOAB = 3
PROBLEM_QUADRATIC = 0
PROBLEM_DOUBLE_WELL = 1
PROBLEM_ROSENBROCK = 2
NOISE_MODEL_ADDITIVE = 0
NOISE_MODEL_TEMPERATURE = 1
NOISE_MODEL_LOSS_SCALED = 2

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK = np.uint64(0xFFFFFFFF)
SH32 = np.uint64(32)
SH8 = np.uint64(8)
U1 = np.uint64(1)

# indices into `consts` (working dtype)
K_LR = 0          # heavy-ball lr
K_HALF_H = 1      # 0.5 * dt
K_H = 2           # dt
K_INIT_THETA = 3  # init_theta_std
K_INIT_V = 4      # init_velocity_std
K_ONE = 5         # 1.0 (carries the working dtype)
N_CONSTS = 6
# indices into `obs` (float64: the recorded observables)
O_HALF_LR = 0     # 0.5 * lr
O_H2_8 = 1        # dt**2 / 8
O_FRAC = 2        # 2, 3, 4: first-passage fractions
O_DIVERGE = 5     # a trajectory is diverged unless its inertia is <= this
N_OBS = 6


def cast_like(x, like):  # pragma: no cover - replaced by the overload inside numba
    return x


@overload(cast_like)
def _cast_like(x, like):
    if like == types.float32:
        return lambda x, like: np.float32(x)
    return lambda x, like: np.float64(x)


def _bitcast(src, dst):
    def make(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))
        return dst(src), codegen
    return intrinsic(make)


# IEEE bits <-> floats: register moves that vectorise (exponent and mantissa of the log's argument)
_f64_bits = _bitcast(types.float64, types.uint64)
_bits_f64 = _bitcast(types.uint64, types.float64)
_f32_bits = _bitcast(types.float32, types.uint32)
_bits_f32 = _bitcast(types.uint32, types.float32)


@intrinsic
def min_number(typingctx, x, y):
    """min(x, y) of two non-NaN floats as llvm.minnum with no-NaNs: one vminpd in SIMD lanes.

    `min(old, new)` written back to memory is seen through by the compiler as "store new where it
    is smaller", a masked store (vmaskmovpd: microcoded and slow on AMD); the intrinsic keeps it a
    plain store of the minimum."""
    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.minnum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args, fastmath=("nnan",))
    return x(x, y), codegen


# --- four float64 lanes as one value (the record loop's explicit SIMD) ----------------------
# The record pass keeps its per-column sums in registers: eight AVX2 accumulators instead of a
# stored row per column re-read by the row sums (the loop vectoriser leaves ordered reductions
# scalar). Plain fadd/fmul/fsub without fast-math flags: the same IEEE operations as scalar code.

class Float64x4(types.Type):
    def __init__(self):
        super().__init__(name="float64x4")


class Mask4(types.Type):
    """Four lanes of a condition as AVX2 keeps them: all-ones or zero 64-bit lanes (no i1 vectors, which
    the backend packs and unpacks around every use)."""

    def __init__(self):
        super().__init__(name="mask4")


float64x4 = Float64x4()
mask4 = Mask4()
_V4 = ir.VectorType(ir.DoubleType(), 4)
_M4 = ir.VectorType(ir.IntType(64), 4)  # a lane all ones (set) or zero: AVX2 compare results


@register_model(Float64x4)
class _Float64x4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V4)


@register_model(Mask4)
class _Mask4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _M4)


def _lane_pointer(context, builder, arr_type, arr, index, elem, lanes=4):
    """Pointer to `lanes` elements of a C-contiguous array from flat element `index`."""
    data = context.make_array(arr_type)(context, builder, arr).data
    at = builder.gep(data, [index])
    return builder.bitcast(at, ir.VectorType(elem, lanes).as_pointer())


@intrinsic
def v4_load(typingctx, arr, index):
    """Elements index .. index + 3 (flat, C order) of a float32 or float64 array, as float64 lanes."""
    def codegen(context, builder, sig, args):
        elem = context.get_value_type(sig.args[0].dtype)
        ptr = _lane_pointer(context, builder, sig.args[0], args[0], args[1], elem)
        x = builder.load(ptr, align=4, typ=ir.VectorType(elem, 4))
        return x if sig.args[0].dtype == types.float64 else builder.fpext(x, _V4)
    return float64x4(arr, index), codegen


@intrinsic
def v4_store(typingctx, arr, index, x):
    """arr.flat[index .. index + 3] = x (a float64 array)."""
    def codegen(context, builder, sig, args):
        ptr = _lane_pointer(context, builder, sig.args[0], args[0], args[1], ir.DoubleType())
        builder.store(args[2], ptr, align=8)
        return context.get_dummy_value()
    return types.none(arr, index, x), codegen


def _splat4(builder, x, lanes=4):
    """`lanes` (four unless said) lanes of the LLVM scalar x (its own type)."""
    ty = ir.VectorType(x.type, lanes)
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


@intrinsic
def v4_splat(typingctx, x):
    """Four float64 lanes of the scalar x (converted to float64)."""
    def codegen(context, builder, sig, args):
        return _splat4(builder, context.cast(builder, args[0], sig.args[0], types.float64))
    return float64x4(x), codegen


def _v4_binary(op):
    """Lane-wise op of two values of one lane type (float64x4, or the eight-lane working types below)."""
    def make(typingctx, a, b):
        if a != b:
            return None
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    return intrinsic(make)


v4_add = _v4_binary("fadd")
v4_sub = _v4_binary("fsub")
v4_mul = _v4_binary("fmul")


@intrinsic
def v4_le(typingctx, a, b):
    """a <= b per lane (false where either is NaN)."""
    def codegen(context, builder, sig, args):
        return builder.sext(builder.fcmp_ordered("<=", args[0], args[1]), _M4)
    return mask4(a, b), codegen


def _m4_bits(builder, m):
    """The four lanes' sign bits as an i4 (vmovmskpd)."""
    return builder.bitcast(builder.icmp_signed("<", m, ir.Constant(_M4, [0, 0, 0, 0])), ir.IntType(4))


@intrinsic
def m4_and(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.and_(args[0], args[1])
    return mask4(a, b), codegen


@intrinsic
def m4_all(typingctx, m):
    """True when every lane is set."""
    def codegen(context, builder, sig, args):
        return builder.icmp_unsigned("==", _m4_bits(builder, args[0]), ir.Constant(ir.IntType(4), 15))
    return types.boolean(m), codegen


@intrinsic
def m4_count(typingctx, m):
    """The number of set lanes."""
    def codegen(context, builder, sig, args):
        bits = builder.zext(_m4_bits(builder, args[0]), ir.IntType(64))
        fn = builder.module.declare_intrinsic("llvm.ctpop.i64", (), ir.FunctionType(ir.IntType(64), [ir.IntType(64)]))
        return builder.call(fn, [bits])
    return types.int64(m), codegen


@intrinsic
def m4_lane_bits(typingctx, m, first):
    """The four lanes' sign bits moved to bits first .. first + 3 of an int64 (vmovmskpd, a shift)."""
    def codegen(context, builder, sig, args):
        bits = builder.zext(_m4_bits(builder, args[0]), ir.IntType(64))
        return builder.shl(bits, context.cast(builder, args[1], sig.args[1], types.int64))
    return types.int64(m, first), codegen


@intrinsic
def lowest_set_bit(typingctx, x):
    """The index of the lowest set bit of a nonzero int64 (tzcnt)."""
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.cttz.i64", (), ir.FunctionType(i64, [i64, ir.IntType(1)]))
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])
    return types.int64(x), codegen


@intrinsic
def m4_lanes_below(typingctx, first, n):
    """Lanes first + u < n, u = 0..3 (one vector compare)."""
    def codegen(context, builder, sig, args):
        f = _splat4(builder, context.cast(builder, args[0], sig.args[0], types.int64))
        lim = _splat4(builder, context.cast(builder, args[1], sig.args[1], types.int64))
        lanes = builder.add(f, ir.Constant(ir.VectorType(ir.IntType(64), 4), [0, 1, 2, 3]))
        return builder.sext(builder.icmp_signed("<", lanes, lim), _M4)
    return mask4(first, n), codegen


@intrinsic
def v4_select(typingctx, m, a, b):
    def codegen(context, builder, sig, args):
        return builder.select(builder.icmp_signed("<", args[0], ir.Constant(_M4, [0, 0, 0, 0])), args[1], args[2])
    return float64x4(m, a, b), codegen


@intrinsic
def v4_keep(typingctx, m, a):
    """a where m is set, +0.0 elsewhere (a bitwise and: the value of `a if m else 0.0`)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.and_(builder.bitcast(args[1], _M4), args[0]), _V4)
    return float64x4(m, a), codegen


@intrinsic
def v4_min(typingctx, a, b):
    """Lane-wise min of non-NaN values (llvm.minnum, as min_number)."""
    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.minnum.v4f64", (), ir.FunctionType(_V4, [_V4, _V4]))
        return builder.call(fn, args, fastmath=("nnan",))
    return float64x4(a, b), codegen


@intrinsic
def v4_max(typingctx, a, b):
    """Python's max(a, b) per lane, as numba forms it for floats: b where b > a, else a."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[1], args[0]), args[1], args[0])
    return float64x4(a, b), codegen


@intrinsic
def v4_pair_sum(typingctx, lo, hi):
    """The fixed tree of the group sums: c = lo + hi, then (c0 + c2) + (c1 + c3)."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        c = builder.fadd(args[0], args[1])
        pair = builder.fadd(builder.shuffle_vector(c, c, ir.Constant(ir.VectorType(i32, 2), [0, 1])),
                            builder.shuffle_vector(c, c, ir.Constant(ir.VectorType(i32, 2), [2, 3])))
        return builder.fadd(builder.extract_element(pair, ir.Constant(i32, 0)),
                            builder.extract_element(pair, ir.Constant(i32, 1)))
    return types.float64(lo, hi), codegen


# --- eight lanes of the working dtype (the recorded heavy-ball step, `_record_1` with step=True) --
# The step pass works on eight lanes in the working dtype (float32: one AVX2 register; the
# reference rounds the step in the working dtype): w8_* keep the dtype of their array or scalar
# (v4_add/sub/mul take any lane type), v4_half widens four of the eight lanes to float64x4.

class Float32x8(types.Type):
    def __init__(self):
        super().__init__(name="float32x8")


class Float64x8(types.Type):
    def __init__(self):
        super().__init__(name="float64x8")


float32x8 = Float32x8()
float64x8 = Float64x8()


@register_model(Float32x8)
class _Float32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), 8))


@register_model(Float64x8)
class _Float64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.DoubleType(), 8))


def _w8_type(dtype):
    return float32x8 if dtype == types.float32 else float64x8


def _w8_pointer(context, builder, arr_type, arr, index):
    return _lane_pointer(context, builder, arr_type, arr, index, context.get_value_type(arr_type.dtype), 8)


@intrinsic
def w8_load(typingctx, arr, index):
    """Elements index .. index + 7 (flat, C order) of a float32 or float64 array, in its dtype."""
    def codegen(context, builder, sig, args):
        ptr = _w8_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load(ptr, align=4, typ=ptr.type.pointee)
    return _w8_type(arr.dtype)(arr, index), codegen


@intrinsic
def w8_store(typingctx, arr, index, x):
    """arr.flat[index .. index + 7] = x (x of arr's dtype)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _w8_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.none(arr, index, x), codegen


@intrinsic
def w8_splat(typingctx, x):
    """Eight lanes of the scalar x, in x's dtype (float32 or float64)."""
    def codegen(context, builder, sig, args):
        return _splat4(builder, args[0], 8)
    return _w8_type(x)(x), codegen


@intrinsic
def v4_half(typingctx, x, half):
    """Lanes 4 half .. 4 half + 3 (half a literal 0 or 1) of an eight-lane value, as float64x4 (exact)."""
    if not isinstance(half, types.IntegerLiteral):
        return None
    lanes = [4 * half.literal_value + u for u in range(4)]

    def codegen(context, builder, sig, args):
        four = builder.shuffle_vector(args[0], ir.Constant(args[0].type, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 4), lanes))
        return builder.fpext(four, _V4) if sig.args[0] == float32x8 else four
    return float64x4(x, half), codegen


def split_exponent(x):  # pragma: no cover - replaced by the overload inside numba
    raise NotImplementedError


@overload(split_exponent)
def _split_exponent(x):
    """(e, m) with x = 2**e m, m in [1, 2), e as a float of x's dtype (x positive and normal)."""
    if x == types.float32:
        def f32(x):
            bits = _f32_bits(x)
            e = np.float32(np.int32(bits >> np.uint32(23))) - np.float32(127.0)
            return e, _bits_f32((bits & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000))
        return f32

    def f64(x):
        bits = _f64_bits(x)
        # the exponent field under the bits of 2**52 is 2**52 + field as a float: no int64 -> float (not in AVX2)
        e = _bits_f64(np.uint64(0x4330000000000000) | (bits >> np.uint64(52))) - 4503599627370496.0 - 1023.0
        return e, _bits_f64((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000))
    return f64


def is_single(x):  # pragma: no cover - replaced by the overload inside numba
    raise NotImplementedError


@overload(is_single)
def _is_single(x):
    """True for float32 (a constant after compilation: the other branch is removed)."""
    single = x == types.float32
    return lambda x: single


def has_ledger(ledger_state):  # pragma: no cover - replaced by the overload inside numba
    raise NotImplementedError


@overload(has_ledger)
def _has_ledger(ledger_state):
    """False when the ledger state is None: a constant after compilation, so the kernel without the
    ledger carries none of its arithmetic (one specialisation each)."""
    on = not isinstance(ledger_state, (types.NoneType, types.Omitted))
    return lambda ledger_state: on


def per_dtype(one, c32, c64):  # pragma: no cover - replaced by the overload inside numba
    raise NotImplementedError


@overload(per_dtype)
def _per_dtype(one, c32, c64):
    """A constant split differently per dtype (ln 2, pi / 2), as a value of one's dtype."""
    if one == types.float32:
        return lambda one, c32, c64: np.float32(c32)
    return lambda one, c32, c64: np.float64(c64)


# --- Philox and the normal transform ----------------------------------------------------

@njit(inline="always", error_model="numpy")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 words holding uint32 values (Random123 constants).

    Each product reads the low 32 bits of its input (the mask folds into vpmuludq: a 32x32 -> 64
    SIMD multiply, not an emulated 64x64 one). c1 and c3 only reach the products through the xors
    that form the next c0 and c2, so their high halves may hold the products' high bits until the
    outputs are masked: two masks per round fewer, the same words.
    """
    k0 &= MASK
    k1 &= MASK
    for _ in range(10):
        p0 = M0 * (c0 & MASK)
        p1 = M1 * (c2 & MASK)
        c0 = (p1 >> SH32) ^ c1 ^ k0
        c2 = (p0 >> SH32) ^ c3 ^ k1
        c1 = p1
        c3 = p0
        k0 = (k0 + W0) & MASK
        k1 = (k1 + W1) & MASK
    return c0 & MASK, c1 & MASK, c2 & MASK, c3 & MASK


@njit(cache=True)
def philox_batch(c0, c1, c2, c3, k0, k1):
    """Philox on arrays of counters (int64 holding uint32); returns [n, 4] uint32 (for tests)."""
    n = c0.shape[0]
    out = np.empty((n, 4), dtype=np.uint32)
    kk0 = np.uint64(k0)
    kk1 = np.uint64(k1)
    for i in range(n):
        x0, x1, x2, x3 = philox4x32(np.uint64(c0[i]), np.uint64(c1[i]), np.uint64(c2[i]), np.uint64(c3[i]), kk0, kk1)
        out[i, 0] = np.uint32(x0)
        out[i, 1] = np.uint32(x1)
        out[i, 2] = np.uint32(x2)
        out[i, 3] = np.uint32(x3)
    return out


# fdlibm's log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f) (e_log.c), and ln 2 in two
# parts (hi with trailing zeros so that e * hi is exact)
LG1 = 6.666666666666735130e-01
LG2 = 3.999999999940941908e-01
LG3 = 2.857142874366239149e-01
LG4 = 2.222219843214978396e-01
LG5 = 1.818357216161805012e-01
LG6 = 1.531383769920937332e-01
LG7 = 1.479819860511658591e-01
LN2_HI_64 = 6.93147180369123816490e-01
LN2_LO_64 = 1.90821492927058770002e-10
LN2_HI_32 = 0.693115234375
LN2_LO_32 = 3.194618329871446e-05
SQRT2 = 1.4142135623730951
# fdlibm's sin/cos kernels on [-pi/4, pi/4] (k_sin.c, k_cos.c); pi/2 in three parts, the first two
# short enough that q * part is exact for the quadrants q <= 4 of [0, 2 pi]
S1 = -1.66666666666666324348e-01
S2 = 8.33333333332248946124e-03
S3 = -1.98412698298579493134e-04
S4 = 2.75573137070700676789e-06
S5 = -2.50507602534068634195e-08
S6 = 1.58969099521155010221e-10
C1 = 4.16666666666666019037e-02
C2 = -1.38888888888741095749e-03
C3 = 2.48015872894767294178e-05
C4 = -2.75573143513906633035e-07
C5 = 2.08757232129817482790e-09
C6 = -1.13596475577881948265e-11
PIO2_1_64 = 1.57079632673412561417e+00
PIO2_2_64 = 6.07710050650619224932e-11
PIO2_3_64 = 0.0
PIO2_1_32 = 1.5703125
PIO2_2_32 = 0.0004837512969970703
PIO2_3_32 = 7.549790126404332e-08
TWO_OVER_PI = 6.36619772367581382433e-01


@njit(inline="always", error_model="numpy")
def log_positive(x):
    """log(x) for a positive normal x (float32 or float64), within an ulp: fdlibm's e_log, no special cases."""
    e, m = split_exponent(x)
    one = cast_like(1.0, x)
    big = m > cast_like(SQRT2, x)
    m = cast_like(0.5, x) * m if big else m
    e = e + one if big else e
    f = m - one
    s = f / (cast_like(2.0, x) + f)
    z = s * s
    w = z * z
    if is_single(x):  # float32 needs four terms (fdlibm's k_logf), float64 seven
        r = z * (cast_like(LG1, x) + w * cast_like(LG3, x)) + w * (cast_like(LG2, x) + w * cast_like(LG4, x))
    else:
        r = (z * (cast_like(LG1, x) + w * (cast_like(LG3, x) + w * (cast_like(LG5, x) + w * cast_like(LG7, x))))
             + w * (cast_like(LG2, x) + w * (cast_like(LG4, x) + w * cast_like(LG6, x))))
    hfsq = cast_like(0.5, x) * f * f
    return e * per_dtype(x, LN2_HI_32, LN2_HI_64) - ((hfsq - (s * (hfsq + r) + e * per_dtype(x, LN2_LO_32, LN2_LO_64)))
                                                    - f)


@njit(inline="always", error_model="numpy")
def sincos_turn(a):
    """(sin a, cos a) for a in [0, 2 pi] (float32 or float64), within an ulp or two.

    Quadrant reduction a = q pi/2 + x, |x| <= pi/4, then fdlibm's kernels and the quadrant's signs.
    """
    q = np.floor(a * cast_like(TWO_OVER_PI, a) + cast_like(0.5, a))
    x = ((a - q * per_dtype(a, PIO2_1_32, PIO2_1_64)) - q * per_dtype(a, PIO2_2_32, PIO2_2_64)) \
        - q * per_dtype(a, PIO2_3_32, PIO2_3_64)
    z = x * x
    if is_single(a):  # on |x| <= pi/4 the terms past S4, C4 are below float32's half ulp
        sn = x + (x * z) * (cast_like(S1, a) + z * (cast_like(S2, a) + z * (cast_like(S3, a) + z * cast_like(S4, a))))
        cs = (cast_like(1.0, a) - cast_like(0.5, a) * z) + (z * z) * (cast_like(C1, a) + z * (
            cast_like(C2, a) + z * (cast_like(C3, a) + z * cast_like(C4, a))))
    else:
        sn = x + (x * z) * (cast_like(S1, a) + z * (cast_like(S2, a) + z * (cast_like(S3, a) + z * (
            cast_like(S4, a) + z * (cast_like(S5, a) + z * cast_like(S6, a))))))
        cs = (cast_like(1.0, a) - cast_like(0.5, a) * z) + (z * z) * (cast_like(C1, a) + z * (cast_like(C2, a) + z * (
            cast_like(C3, a) + z * (cast_like(C4, a) + z * (cast_like(C5, a) + z * cast_like(C6, a))))))
    odd = (q == cast_like(1.0, a)) | (q == cast_like(3.0, a))
    s0 = cs if odd else sn
    c0 = sn if odd else cs
    s1 = -s0 if (q == cast_like(2.0, a)) | (q == cast_like(3.0, a)) else s0
    c1 = -c0 if (q == cast_like(1.0, a)) | (q == cast_like(2.0, a)) else c0
    return s1, c1


@njit(inline="always", error_model="numpy")
def uniform24(x, plus, one):
    """(top 24 bits of a uint32 word + plus) * 2**-24 in the dtype of `one` (exact).

    Through int32: AVX2 converts int32 lanes to floats, not uint64 ones (the values are below 2**24 + 1).
    """
    return cast_like(np.int32(x >> SH8) + np.int32(plus), one) * cast_like(5.9604644775390625e-08, one)


@njit(inline="always", error_model="numpy")
def box_muller_uniform(u1, u2):
    """Two normals from u1 in (0, 1], u2 in [0, 1) (the CONVENTIONS transform, in the dtype of u1).

    The reference rounds log u1, the square root, the angle 2 pi u2 and each product in the
    working dtype; so does this, with log/sin/cos as polynomials in that dtype (SIMD lanes
    instead of libm calls).
    """
    r = np.sqrt(cast_like(-2.0, u1) * log_positive(u1))
    s, c = sincos_turn(cast_like(6.283185307179586, u1) * u2)
    return r * c, r * s


@njit(inline="always", error_model="numpy")
def box_muller(xa, xb, one):
    """Two normals from two uint32 words, in the dtype of `one`."""
    return box_muller_uniform(uniform24(xa, 1, one), uniform24(xb, 0, one))


@intrinsic
def fma(typingctx, x, y, z):
    """x * y + z with one rounding (llvm.fma: the FMA instruction), in the type of the three (a float
    or a lane type such as float64x4)."""
    if not x == y == z:
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        lane = ty.element if isinstance(ty, ir.VectorType) else ty
        name = "f32" if isinstance(lane, ir.FloatType) else "f64"
        name = f"v{ty.count}{name}" if isinstance(ty, ir.VectorType) else name
        fn = builder.module.declare_intrinsic(f"llvm.fma.{name}", (), ir.FunctionType(ty, [ty, ty, ty]))
        return builder.call(fn, args)
    return x(x, y, z), codegen


_f32_ibits = _bitcast(types.float32, types.int32)
_ibits_f32 = _bitcast(types.int32, types.float32)

# fdlibm's logf (e_logf.c): log(1 + f) = 2 atanh s = s (2 + R(s^2)), s = f / (2 + f), R(z) = LOGF_1 z + .. + LOGF_4 z^4
LOGF_1 = 0.66666662693
LOGF_2 = 0.40000972152
LOGF_3 = 0.28498786688
LOGF_4 = 0.24279078841
MINUS_2LN2 = -1.3862943611198906
# log k for an integer k = 2^e m, m in [sqrt(1/2), sqrt(2)): adding 1 - sqrt(1/2) in the bits carries into
# the exponent; u1 = k 2^-24, so e counts from 127 + 24
LOG_SHIFT = 0x3F800000 - 0x3F3504F3
LOG_BIAS = 127 + 24
TWO_PI = 6.283185307179586
TWO_M24 = 5.9604644775390625e-08
# 1.5 2^23: x + ROUND in (2^23, 2^24) for |x| < 2^22, where a float32's ulp is 1, so the sum is x rounded to
# an integer, which the low mantissa bits hold
ROUND = 12582912.0
ROUND_BITS = 0x4B400000


@njit(inline="always", error_model="numpy")
def _minus_2log_f32(k):
    """-2 log(k 2^-24) for an integer-valued float32 k in [1, 2^24], within an ulp or two.

    Short dependency chains (see box_muller_words_f32): the terms of R in Estrin's scheme, -2 folded
    into the coefficients (exact)."""
    f32 = np.float32
    ix = np.int32(_f32_ibits(k) + np.int32(LOG_SHIFT))
    e = f32(np.int32((ix >> np.int32(23)) - np.int32(LOG_BIAS)))
    m = _ibits_f32(np.int32((ix & np.int32(0x007FFFFF)) + np.int32(0x3F3504F3)))
    s = (m - f32(1.0)) / (m + f32(1.0))
    z = s * s
    lo = fma(z, f32(-2.0 * LOGF_2), f32(-2.0 * LOGF_1))
    hi = fma(z, f32(-2.0 * LOGF_4), f32(-2.0 * LOGF_3))
    t = fma(z, fma(z * z, hi, lo), f32(-4.0))  # -2 (2 + R(z))
    return fma(s, t, e * f32(MINUS_2LN2))


@njit(inline="always", error_model="numpy")
def _flip(x, sign):
    """x with its sign bit flipped where bit 31 of `sign` is set."""
    return _ibits_f32(np.int32(_f32_ibits(x) ^ (sign & np.int32(-2147483648))))


@njit(inline="always", error_model="numpy")
def radius_f32(xa):
    """sqrt(-2 log u1) of the word xa (u1 = ((xa >> 8) + 1) 2^-24), float32: the radius of `box_muller_words_f32`."""
    return np.sqrt(_minus_2log_f32(np.float32(np.int32(xa >> np.uint32(8)) + np.int32(1))))


@njit(inline="always", error_model="numpy")
def turn_f32(xb):
    """(cos, sin) of the angle 2 pi u2 of the word xb (u2 = (xb >> 8) 2^-24), float32: the direction of
    `box_muller_words_f32`.

    u2 and the angle 2 pi u2 rounded as the reference rounds them; the quadrant q by rounding in the
    mantissa (no float -> int conversions), sin and cos of the reduced angle in Estrin's scheme."""
    f32 = np.float32
    a = f32(TWO_PI) * (f32(np.int32(xb >> np.uint32(8))) * f32(TWO_M24))
    qr = fma(a, f32(TWO_OVER_PI), f32(ROUND))
    qi = np.int32(_f32_ibits(qr) - np.int32(ROUND_BITS))  # the quadrant, 0..4
    q = f32(ROUND) - qr
    x = fma(q, f32(PIO2_3_32), fma(q, f32(PIO2_2_32), fma(q, f32(PIO2_1_32), a)))
    z = x * x
    z2 = z * z
    sn = fma(x * z, fma(z2, fma(z, f32(S4), f32(S3)), fma(z, f32(S2), f32(S1))), x)
    cs = fma(z2, fma(z2, fma(z, f32(C4), f32(C3)), fma(z, f32(C2), f32(C1))), fma(f32(-0.5), z, f32(1.0)))
    odd = (qi & np.int32(1)) != 0
    s0 = cs if odd else sn
    c0 = sn if odd else cs
    # sin is negative in quadrants 2, 3; cos in 1, 2: bit 1 of q, of q + 1, moved to the sign bit
    return _flip(c0, np.int32(np.int32(qi + np.int32(1)) << np.int32(30))), _flip(s0, np.int32(qi << np.int32(30)))


@njit(inline="always", error_model="numpy")
def box_muller_words_f32(xa, xb):
    """The CONVENTIONS normals (r cos, r sin) of two uint32 words (held in any unsigned integer), float32.

    The float32 transform of `_draw` and of the optimizer's normals: log/sin/cos as polynomials with
    fused multiply-adds and integer range reduction (no compare-and-blend ladders), within a few ulp
    of the reference. The chains are kept short (the polynomials in Estrin's scheme, -2 folded into
    the log's coefficients): `_draw` runs the radius and the turn as passes of their own."""
    r = radius_f32(xa)
    c, s = turn_f32(xb)
    return r * c, r * s


@njit(cache=True, error_model="numpy")
def normals_batch(xa, xb, out):
    """out[i] = box_muller(xa[i], xb[i]) in out's dtype, over arrays of uint32 words held in int64 (for tests)."""
    one = cast_like(1.0, out[0, 0])
    for i in range(xa.shape[0]):
        out[i, 0], out[i, 1] = box_muller(np.uint64(xa[i]), np.uint64(xb[i]), one)


@njit(inline="always", error_model="numpy")
def _draw(z, k, base, quad, tag, k0, k1, w, one):
    """z[0..3, k, :] = the four normals of counters (base + j, quad, k, tag) for the GROUP lanes j.

    float32: Philox, then `box_muller_words_f32` of its words; float64: the CONVENTIONS transform of
    the uniforms with the float64 polynomials (`box_muller_uniform`)."""
    coord = np.uint64(k)
    # a pass per stage, each a loop the compiler vectorises (fused, the transform's loop stays scalar)
    for j in range(GROUP):
        w[0, j], w[1, j], w[2, j], w[3, j] = philox4x32(base + np.uint64(j), quad, coord, tag, k0, k1)
    if is_single(one):
        # box_muller_words_f32 in two passes, the radii (parked in z[1], z[3]) and then the turns: each
        # pass has shorter chains and fewer live constants (fewer spills) than the whole transform
        for j in range(GROUP):
            z[1, k, j] = radius_f32(w[0, j])
            z[3, k, j] = radius_f32(w[2, j])
        for j in range(GROUP):
            c, sn = turn_f32(w[1, j])
            r = z[1, k, j]
            z[0, k, j], z[1, k, j] = r * c, r * sn
            c, sn = turn_f32(w[3, j])
            r = z[3, k, j]
            z[2, k, j], z[3, k, j] = r * c, r * sn
        return
    for j in range(GROUP):
        z[0, k, j] = uniform24(w[0, j], 1, one)
        z[1, k, j] = uniform24(w[1, j], 0, one)
        z[2, k, j] = uniform24(w[2, j], 1, one)
        z[3, k, j] = uniform24(w[3, j], 0, one)
    for j in range(GROUP):
        z[0, k, j], z[1, k, j] = box_muller_uniform(z[0, k, j], z[1, k, j])
        z[2, k, j], z[3, k, j] = box_muller_uniform(z[2, k, j], z[3, k, j])


# --- problems on [dim, GROUP] blocks --------------------------------------------------------

@njit(inline="always", error_model="numpy")
def _grad_loss_1(problem, x, lam, one):
    """(grad, loss) of one coordinate (d = 1 quadratic or double well), the operation order of the loops below."""
    if problem == PROBLEM_QUADRATIC:
        lt = lam * x
        return lt, cast_like(0.5, one) * (lt * x)
    w = x * x - one
    return x * w, cast_like(0.25, one) * (w * w)


@njit(inline="always", error_model="numpy")
def _grad_loss(problem, th, lm, g, L, one):
    """g = grad L(th), L = L(th) per lane in one's dtype (th converted to it); coordinates summed in order."""
    dim = th.shape[0]
    if dim == 1 and problem != PROBLEM_ROSENBROCK:  # one pass: the same values as the loops below
        for j in range(GROUP):
            g[0, j], L[j] = _grad_loss_1(problem, cast_like(th[0, j], one), lm[0, j], one)
        return
    for j in range(GROUP):
        L[j] = cast_like(0.0, one)
    if problem == PROBLEM_QUADRATIC:
        for k in range(dim):
            for j in range(GROUP):
                x = cast_like(th[k, j], one)
                lt = lm[k, j] * x
                L[j] += lt * x
                g[k, j] = lt
        for j in range(GROUP):
            L[j] = cast_like(0.5, one) * L[j]
    elif problem == PROBLEM_DOUBLE_WELL:
        for k in range(dim):
            for j in range(GROUP):
                x = cast_like(th[k, j], one)
                w = x * x - one
                L[j] += w * w
                g[k, j] = x * w
        for j in range(GROUP):
            L[j] = cast_like(0.25, one) * L[j]
    else:  # chained rosenbrock
        for j in range(GROUP):
            g[dim - 1, j] = cast_like(0.0, one)
        for k in range(dim - 1):
            for j in range(GROUP):
                x = cast_like(th[k, j], one)
                r = cast_like(th[k + 1, j], one) - x * x
                omx = one - x
                L[j] += cast_like(100.0, one) * (r * r) + omx * omx
                g[k, j] = (cast_like(0.0, one) if k == 0 else g[k, j]) + (cast_like(-400.0, one) * x * r
                                                                          - cast_like(2.0, one) * omx)
                g[k + 1, j] = cast_like(200.0, one) * r


@njit(inline="always", error_model="numpy")
def _noise_scale(sc, base, L, factor, loss_scaled, one):
    """Loss-scaled model: sc = (base sqrt(max(L, 0))) * factor per lane. The other models use `base`
    itself (the step's loops read `sc[j] if loss_scaled else base`: the compiler splits each loop in two)."""
    if loss_scaled:
        for j in range(GROUP):
            lj = L[j]
            lj = cast_like(0.0, one) if lj < 0 else lj  # torch.clamp(min=0) keeps NaN
            sc[j] = (base * np.sqrt(lj)) * factor


# --- one step of each integrator (reference operation order) ------------------------------

@njit(inline="always", error_model="numpy")
def _ledger_factors(a, hk):
    """(2 a, (1 - a^2) hk): the factors of the ledger's split for friction factor a and kinetic factor hk
    (float64), formed here once for the step's loops and `_record_1`'s step pass alike."""
    return a + a, (1.0 - a * a) * hk


@njit(inline="always", error_model="numpy")
def _ledger_add(d, q, m, kick, a2, dahk, hk):
    """(D, Q) plus the split of friction m -> a m, then the noise kick, on one coordinate of one lane,
    in float64: D += (1 - a^2) K(m), Q += K(a m + kick) - K(a m) = hk kick (2 a m + kick), K(m) = hk m^2.

    m and kick are the working-dtype values the step uses; a2 = 2 a, dahk = (1 - a^2) hk. Three fused
    multiply-adds (`_ledger_4` the same in four lanes): each term rounded once into its sum."""
    m = np.float64(m)
    kick = np.float64(kick)
    return fma(dahk * m, m, d), fma(hk * kick, fma(a2, m, kick), q)


@njit(inline="always", error_model="numpy")
def _step(integrator, problem, loss_scaled, ledger, ca, cb, cc, lr, h, half_h, hk, th, v, g, L, lm, z, lane, sc, s,
          one):
    """Advance the group's state by one step with standard normals z[lane]; g, L follow th.

    ledger (a constant after compilation): also add the step's dissipated and injected energy
    (friction, then noise; docs/THEORY.md section 8) to the lanes' float64 rows R_D, R_Q of s.
    hk: the float64 kinetic factor (K = hk |m|^2: lr/2 heavy ball, 1/2 continuous).
    Scalars and whole arrays only (no slices or tuples): a view made in the step loop costs
    two atomic reference-count updates per step.
    """
    dim = th.shape[0]
    # the friction factor a in float64, as the reference's ledger forms it (Euler's: 1 - h gamma_n)
    a = 1.0 - np.float64(ca) if integrator == INTEGRATOR_EULER else np.float64(ca)
    a2, dahk = _ledger_factors(a, hk)
    if integrator == INTEGRATOR_HEAVY_BALL:
        _noise_scale(sc, cb, L, cc, loss_scaled, one)
        if ledger:  # its own loop (reads only): the update loop below stays as without the ledger
            for k in range(dim):
                for j in range(GROUP):
                    s[R_D * GROUP + j], s[R_Q * GROUP + j] = _ledger_add(
                        s[R_D * GROUP + j], s[R_Q * GROUP + j], v[k, j], (sc[j] if loss_scaled else cb) * z[lane, k, j],
                        a2, dahk, hk)
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = ca * v[k, j] + (g[k, j] + (sc[j] if loss_scaled else cb) * z[lane, k, j])
                th[k, j] = th[k, j] - lr * v[k, j]
    elif integrator == INTEGRATOR_EULER:
        _noise_scale(sc, cb, L, cc, loss_scaled, one)
        if ledger:
            for k in range(dim):
                for j in range(GROUP):
                    s[R_D * GROUP + j], s[R_Q * GROUP + j] = _ledger_add(
                        s[R_D * GROUP + j], s[R_Q * GROUP + j], v[k, j], (sc[j] if loss_scaled else cb) * z[lane, k, j],
                        a2, dahk, hk)
        for k in range(dim):
            for j in range(GROUP):
                x = th[k, j]
                th[k, j] = x + h * v[k, j]
                v[k, j] = ((v[k, j] - h * g[k, j]) - ca * v[k, j]) + (sc[j] if loss_scaled else cb) * z[lane, k, j]
    elif integrator == INTEGRATOR_LEAPFROG:  # B A B O
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = v[k, j] - half_h * g[k, j]
                th[k, j] = th[k, j] + h * v[k, j]
        _grad_loss(problem, th, lm, g, L, one)
        _noise_scale(sc, cb, L, cc, loss_scaled, one)
        if ledger:  # the O step acts on the velocity after the second half kick
            for k in range(dim):
                for j in range(GROUP):
                    s[R_D * GROUP + j], s[R_Q * GROUP + j] = _ledger_add(
                        s[R_D * GROUP + j], s[R_Q * GROUP + j], v[k, j] - half_h * g[k, j],
                        (sc[j] if loss_scaled else cb) * z[lane, k, j], a2, dahk, hk)
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = ca * (v[k, j] - half_h * g[k, j]) + (sc[j] if loss_scaled else cb) * z[lane, k, j]
        return
    else:  # baoab: B A O A B
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = v[k, j] - half_h * g[k, j]
                th[k, j] = th[k, j] + half_h * v[k, j]
        if loss_scaled:
            _grad_loss(problem, th, lm, g, L, one)  # the loss at the midpoint scales the O-step
        _noise_scale(sc, cb, L, cc, loss_scaled, one)
        if ledger:
            for k in range(dim):
                for j in range(GROUP):
                    s[R_D * GROUP + j], s[R_Q * GROUP + j] = _ledger_add(
                        s[R_D * GROUP + j], s[R_Q * GROUP + j], v[k, j], (sc[j] if loss_scaled else cb) * z[lane, k, j],
                        a2, dahk, hk)
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = ca * v[k, j] + (sc[j] if loss_scaled else cb) * z[lane, k, j]
                th[k, j] = th[k, j] + half_h * v[k, j]
        _grad_loss(problem, th, lm, g, L, one)
        for k in range(dim):
            for j in range(GROUP):
                v[k, j] = v[k, j] - half_h * g[k, j]
        return
    _grad_loss(problem, th, lm, g, L, one)


# --- what is recorded --------------------------------------------------------------------

# rows of the packed float64 scratch `s` of a group (row r is s[r * GROUP:(r + 1) * GROUP]); one array
# with constant offsets, so the compiler proves the rows apart and vectorises without runtime alias checks
R_VV = 0     # |v|^2
R_VG = 1     # <v, grad L> (heavy ball) or |grad L|^2
R_LOSS = 2
R_THR = 3    # 3, 4, 5: f I_0 per fraction
R_FP = 6     # 6, 7, 8: first passage per fraction (a step index as float64; +inf: not yet)
R_INE = 9    # the lane's inertia
R_I0 = 10    # its I_0 (float64)
R_D = 11     # cumulative dissipated since step 0 (the ledger; float64)
R_Q = 12     # cumulative injected since step 0
R_SUM = 13   # 13..21: the summands of the N_COLUMNS columns, 0 for a dropped lane
R_NEXT = R_SUM + N_COLUMNS  # the largest threshold not passed yet (-inf: all passed): one compare finds a hit
R_LIMIT = R_NEXT + 1        # the divergence limit for a lane of the group, NaN for a padding lane (never kept)
R_GROUP = R_LIMIT + 1       # scalars of the group: [0] the sum of I_0 over the kept lanes, [1] how many lanes
N_ROWS = R_GROUP + 1
SUM_WAYS = 8  # a row of 64 is summed as 8 interleaved partial sums (two AVX2 vectors), then a fixed tree


@njit(inline="always", error_model="numpy")
def _observe(heavy, problem, th, v, lm64, g64, L64, s):
    """Rows R_VV, R_VG, R_LOSS of s: float64 |v|^2, <v, g> or |g|^2, and L from the state converted to
    float64 (dim > 1 or rosenbrock; d = 1 forms them inside the record loop, `_observe_1`)."""
    dim = th.shape[0]
    _grad_loss(problem, th, lm64, g64, L64, 1.0)
    for j in range(GROUP):
        s[R_VV * GROUP + j] = 0.0
        s[R_VG * GROUP + j] = 0.0
        s[R_LOSS * GROUP + j] = L64[j]
    for k in range(dim):
        for j in range(GROUP):
            y = np.float64(v[k, j])
            s[R_VV * GROUP + j] += y * y
            s[R_VG * GROUP + j] += y * g64[k, j] if heavy else g64[k, j] * g64[k, j]


@njit(inline="always", error_model="numpy")
def _record_lane(j, vv, vg, loss, s, fm, never, kc, sc_vg, limit, n_active, initial, ledger):
    """Lane j's recorded quantities from its float64 |v|^2 (vv), <v, g> or |g|^2 (vg) and loss: inertia,
    first passage, the summands of the N_COLUMNS columns (0 for a dropped lane). kc: the kinetic factor
    (lr/2 heavy ball, 1/2 otherwise); sc_vg: the shadow's factor (lr/2 heavy ball, -h^2/8 otherwise).
    Every select is a value stored unconditionally: a select written back only where it changes
    becomes a masked store (microcoded on AMD), a read under a condition a masked load."""
    kin = kc * vv
    ine = kin + loss
    shadow = ine + sc_vg * vg
    s[R_INE * GROUP + j] = ine
    for f in range(3):  # the first hit is the smallest step: a min (see min_number)
        hit = fm if ine <= s[(R_THR + f) * GROUP + j] else never
        s[(R_FP + f) * GROUP + j] = min_number(s[(R_FP + f) * GROUP + j], hit)
    keep = (ine <= limit) & (j < n_active)
    s[R_SUM * GROUP + j] = 1.0 if keep else 0.0
    s[(R_SUM + 1) * GROUP + j] = ine if keep else 0.0
    s[(R_SUM + 2) * GROUP + j] = kin if keep else 0.0
    s[(R_SUM + 3) * GROUP + j] = loss if keep else 0.0
    s[(R_SUM + 4) * GROUP + j] = shadow if keep else 0.0
    s[(R_SUM + 5) * GROUP + j] = ine * ine if keep else 0.0
    if ledger:
        d = s[R_D * GROUP + j]
        q = s[R_Q * GROUP + j]
        i0 = s[R_I0 * GROUP + j]
        i0 = ine if initial else i0  # the initial state's own record: W = 0
        s[(R_SUM + COLUMN_DISSIPATED) * GROUP + j] = d if keep else 0.0
        s[(R_SUM + COLUMN_INJECTED) * GROUP + j] = q if keep else 0.0
        s[(R_SUM + COLUMN_RESIDUAL) * GROUP + j] = (((ine - i0) + d) - q) if keep else 0.0


@njit(inline="always", error_model="numpy")
def _first_passage_4(s, j, f, hit, vfm, vnever, vpassed, vunit):
    """Lanes j..j+3 that hit fraction f now: first passage = min(old, m), threshold -inf (passed); returns
    the new thresholds.

    Both stores are unconditional; the kept threshold goes through a multiply by vunit (1.0 the
    compiler cannot see): select(hit, x, <the loaded value>) stored back is turned into a masked
    store (microcoded on AMD)."""
    o_fp = (R_FP + f) * GROUP + j
    o_thr = (R_THR + f) * GROUP + j
    v4_store(s, o_fp, v4_min(v4_load(s, o_fp), v4_select(hit, vfm, vnever)))
    thr = v4_select(hit, vpassed, v4_mul(v4_load(s, o_thr), vunit))
    v4_store(s, o_thr, thr)
    return thr


@njit(inline="always", error_model="numpy")
def _refresh_next(s):
    """Row R_NEXT from the thresholds: max over the fractions (a passed one is -inf)."""
    for j in range(GROUP):
        t = s[R_THR * GROUP + j]
        t = max(t, s[(R_THR + 1) * GROUP + j])
        s[R_NEXT * GROUP + j] = max(t, s[(R_THR + 2) * GROUP + j])


@njit(inline="always", error_model="numpy")
def _kept_i0_sum(s, kept):
    """The sum of I_0 over the lanes kept at this record, in the partial-sum order of `_record_1`.

    Lanes are only ever dropped (a diverged lane stays NaN), so the kept set is fixed by its size:
    the sum is formed once per window and again only after a lane diverges."""
    o = R_GROUP * GROUP
    if s[o + 1] != np.float64(kept):
        lo = hi = v4_splat(-0.0)
        for i in range(GROUP // SUM_WAYS):
            j = SUM_WAYS * i
            lo = v4_add(lo, v4_keep(v4_le(v4_load(s, R_INE * GROUP + j), v4_load(s, R_LIMIT * GROUP + j)),
                                    v4_load(s, R_I0 * GROUP + j)))
            hi = v4_add(hi, v4_keep(v4_le(v4_load(s, R_INE * GROUP + j + 4), v4_load(s, R_LIMIT * GROUP + j + 4)),
                                    v4_load(s, R_I0 * GROUP + j + 4)))
        s[o] = v4_pair_sum(lo, hi)
        s[o + 1] = np.float64(kept)
    return s[o]


@njit(inline="always", error_model="numpy")
def _ledger_4(s, j, vdahk, vhk, va2, m64, k64):
    """The ledger's split of a heavy-ball step on lanes j..j+3 (float64, `_ledger_add`'s operations):
    D += (1 - a^2) K(m), Q += K(a m + k) - K(a m) = hk k (2 a m + k); returns the new (D, Q)."""
    d = fma(v4_mul(vdahk, m64), m64, v4_load(s, R_D * GROUP + j))
    q = fma(v4_mul(vhk, k64), fma(va2, m64, k64), v4_load(s, R_Q * GROUP + j))
    v4_store(s, R_D * GROUP + j, d)
    v4_store(s, R_Q * GROUP + j, q)
    return d, q


@njit(inline="always", error_model="numpy")
def _record_1(row, grp, m, acc, heavy, quadratic, ledger, kc, sc_vg, th, v, lm64, s, step, masked, ca, cb, lr, a2, dahk,
              hk, grad, lm, z, lane, one):
    """`_record` for d = 1 (quadratic or double well) in explicit float64x4 lanes: the observables,
    first passage and the summands formed in one pass, the column sums in registers.

    step (heavy ball, noise not loss-scaled; a constant in each copy): a pass first advances the
    group by the step (`_step`'s arithmetic and ledger split, eight lanes at a time in the working
    dtype: w8_*), then the record reads the stepped state back (from L1). Two passes over the
    group's state per step instead of four (ledger, update, gradient, record); one fused pass was
    slower: its iterations' chains (loads, step, conversion, observables, sums) were too long for
    out-of-order execution to overlap.

    masked False (the stepping copies): the sums take every lane, right when every lane is kept;
    otherwise it returns -1 having written nothing but the step, and `_record` records the stepped
    state again, masked (rare: a group with a diverged or padding lane).

    Six sums per lane (|v|^2, L, vg, I^2, D, Q; few enough to stay in registers; vg and I^2 as fused
    multiply-adds, I = fma(kc, |v|^2, L)):
    lanes 8 i + u (u < 4) go to the four lanes of the first pass's accumulators, 8 i + 4 + u to the
    second's, i in order from -0.0 (the exact additive identity), then the fixed tree (v4_pair_sum).
    The group's K, I, shadow and W come from its sums: K = kc |v|^2, I = K + L, shadow = I + sc_vg vg,
    W = ((I - I_0) + D) - Q with the I_0 sum of the kept lanes (`_kept_i0_sum`), 0 at the initial
    record. The count is the number of kept lanes (a sum of ones, exact in any order). A lane passing
    a threshold now shows as I <= its R_NEXT and sets its bit of a 64-bit mask; the blocks of four with
    a bit set have their first passages and thresholds written after the pass. Returns the count."""
    fm = np.float64(m)
    initial = m == 0 and not step
    vkc, vhalf, vquarter, vone = v4_splat(kc), v4_splat(0.5), v4_splat(0.25), v4_splat(1.0)
    wca, wcb, wlr, wone = w8_splat(ca), w8_splat(cb), w8_splat(lr), w8_splat(one)
    va2, vdahk, vhk = v4_splat(a2), v4_splat(dahk), v4_splat(hk)
    zo = lane * GROUP  # z[lane, 0, :]
    kept = 0
    every = m4_lanes_below(0, GROUP)  # all set
    hits = 0  # lane j's bit: it passes a threshold now
    if step:
        # _step's heavy ball on lanes j..j+7 (eight working-dtype lanes: one AVX2 register in float32), the
        # ledger's split first (of the old momentum)
        for i in range(GROUP // SUM_WAYS):
            j = SUM_WAYS * i
            xw = w8_load(th, j)
            yw = w8_load(v, j)
            kick = v4_mul(wcb, w8_load(z, zo + j))
            if ledger:
                _ledger_4(s, j, vdahk, vhk, va2, v4_half(yw, 0), v4_half(kick, 0))
                _ledger_4(s, j + 4, vdahk, vhk, va2, v4_half(yw, 1), v4_half(kick, 1))
            yw = v4_add(v4_mul(wca, yw), v4_add(w8_load(grad, j), kick))
            xw = v4_sub(xw, v4_mul(wlr, yw))
            if quadratic:  # _grad_loss_1 in the working dtype
                gw = v4_mul(w8_load(lm, j), xw)
            else:
                gw = v4_mul(xw, v4_sub(v4_mul(xw, xw), wone))
            w8_store(th, j, xw)
            w8_store(v, j, yw)
            w8_store(grad, j, gw)
    for half in range(2):
        a_vv = a_loss = a_vg = a_sq = a_d = a_q = v4_splat(-0.0)
        for i in range(GROUP // SUM_WAYS):
            j = SUM_WAYS * i + 4 * half
            y = v4_load(v, j)
            x = v4_load(th, j)
            if ledger:
                d = v4_load(s, R_D * GROUP + j)
                q = v4_load(s, R_Q * GROUP + j)
            if quadratic:  # _grad_loss_1 in float64
                g = v4_mul(v4_load(lm64, j), x)
                loss = v4_mul(vhalf, v4_mul(g, x))
            else:
                w = v4_sub(v4_mul(x, x), vone)
                g = v4_mul(x, w)
                loss = v4_mul(vquarter, v4_mul(w, w))
            gv = y if heavy else g  # vg = <v, g> (heavy ball) or |g|^2
            vv = v4_mul(y, y)
            ine = fma(vkc, vv, loss)
            v4_store(s, R_INE * GROUP + j, ine)
            hits |= m4_lane_bits(v4_le(ine, v4_load(s, R_NEXT * GROUP + j)), j)
            keep = v4_le(ine, v4_load(s, R_LIMIT * GROUP + j))
            if masked:
                kept += m4_count(keep)
                # fma(0, 0, a) = a + 0: a dropped lane adds +0.0, a kept one the unmasked fma's value
                a_vv = v4_add(a_vv, v4_keep(keep, vv))
                a_loss = v4_add(a_loss, v4_keep(keep, loss))
                a_vg = fma(v4_keep(keep, gv), v4_keep(keep, g), a_vg)
                kine = v4_keep(keep, ine)
                a_sq = fma(kine, kine, a_sq)
                if ledger:
                    a_d = v4_add(a_d, v4_keep(keep, d))
                    a_q = v4_add(a_q, v4_keep(keep, q))
            else:  # x & all-ones is x: the same sums when every lane is kept
                every = m4_and(every, keep)
                a_vv = v4_add(a_vv, vv)
                a_loss = v4_add(a_loss, loss)
                a_vg = fma(gv, g, a_vg)
                a_sq = fma(ine, ine, a_sq)
                if ledger:
                    a_d = v4_add(a_d, d)
                    a_q = v4_add(a_q, q)
        o = R_SUM * GROUP + 4 * half  # the accumulators, parked in the summand rows
        v4_store(s, o + 2 * GROUP, a_vv)
        v4_store(s, o + 3 * GROUP, a_loss)
        v4_store(s, o + 4 * GROUP, a_vg)
        v4_store(s, o + 5 * GROUP, a_sq)
        v4_store(s, o + COLUMN_DISSIPATED * GROUP, a_d)
        v4_store(s, o + COLUMN_INJECTED * GROUP, a_q)
    if not masked:
        if not m4_all(every):
            return -1
        kept = GROUP
    if hits != 0:
        # only the blocks of four lanes with a hit, found from the lanes' bits (no test per block: early in
        # a decay most records have a hit somewhere in the group, each lane passing each fraction once)
        never = kc * 0.0 + np.inf  # see _record
        vfm, vnever, vpassed = v4_splat(fm), v4_splat(never), v4_splat(-np.inf)
        vunit = v4_splat(kc * 0.0 + 1.0)  # 1.0 (kc is finite), as a value the compiler cannot see
        while hits != 0:
            j = lowest_set_bit(hits) & ~3
            hits &= ~(15 << j)
            ine = v4_load(s, R_INE * GROUP + j)
            # the new thresholds' max (_refresh_next of these four lanes), from registers
            nxt = _first_passage_4(s, j, 0, v4_le(ine, v4_load(s, R_THR * GROUP + j)), vfm, vnever, vpassed, vunit)
            for f in range(1, 3):
                nxt = v4_max(nxt, _first_passage_4(s, j, f, v4_le(ine, v4_load(s, (R_THR + f) * GROUP + j)), vfm,
                                                   vnever, vpassed, vunit))
            v4_store(s, R_NEXT * GROUP + j, nxt)
    if row >= 0:
        # the sums from the parked accumulators into locals, then stored: nothing is read back from the
        # freshly written (and often not yet cached) row of acc
        o = R_SUM * GROUP
        kin = kc * v4_pair_sum(v4_load(s, o + 2 * GROUP), v4_load(s, o + 2 * GROUP + 4))
        loss = v4_pair_sum(v4_load(s, o + 3 * GROUP), v4_load(s, o + 3 * GROUP + 4))
        vg = v4_pair_sum(v4_load(s, o + 4 * GROUP), v4_load(s, o + 4 * GROUP + 4))
        sq = v4_pair_sum(v4_load(s, o + 5 * GROUP), v4_load(s, o + 5 * GROUP + 4))
        total = kin + loss
        acc[row, grp, 0] = np.float64(kept)
        acc[row, grp, 1] = total
        acc[row, grp, 2] = kin
        acc[row, grp, 3] = loss
        acc[row, grp, 4] = total + sc_vg * vg
        acc[row, grp, 5] = sq
        if not ledger:
            acc[row, grp, COLUMN_DISSIPATED] = 0.0
            acc[row, grp, COLUMN_INJECTED] = 0.0
            acc[row, grp, COLUMN_RESIDUAL] = 0.0
        else:
            od = (R_SUM + COLUMN_DISSIPATED) * GROUP
            oq = (R_SUM + COLUMN_INJECTED) * GROUP
            dis = v4_pair_sum(v4_load(s, od), v4_load(s, od + 4))
            inj = v4_pair_sum(v4_load(s, oq), v4_load(s, oq + 4))
            acc[row, grp, COLUMN_DISSIPATED] = dis
            acc[row, grp, COLUMN_INJECTED] = inj
            # the initial state's own record: W = 0
            acc[row, grp, COLUMN_RESIDUAL] = 0.0 if initial else ((total - _kept_i0_sum(s, kept)) + dis) - inj
    return kept


@njit(inline="always", error_model="numpy")
def _record(row, grp, m, acc, heavy, problem, ledger, half_lr, h2_8, limit, th, v, lm64, g64, L64, s, n_active,
            step, ca, cb, lr, a2, dahk, hk, g, lm, z, lane, one):
    """At a recorded state (after step m): observables in float64, first passage, divergence, the
    ledger's residual, and the group's float64 sums into acc[row, grp] (row -1: none). Returns the
    number of lanes kept. ledger False (a constant): the ledger columns are 0.

    d = 1 (quadratic, double well): `_record_1`; otherwise one vectorised pass over the lanes
    writing the summand rows, then `_row_sum` per column."""
    dim = th.shape[0]
    # (-h2_8) vg is -(h2_8 vg) exactly, and ine + -(x) is ine - x: the reference's values
    kc, sc_vg = (half_lr, half_lr) if heavy else (0.5, -h2_8)
    if dim == 1 and problem != PROBLEM_ROSENBROCK:
        # the stepping copies have the problem and the step as constants: their loop tests neither
        kept = -1
        if step and problem == PROBLEM_QUADRATIC:
            kept = _record_1(row, grp, m, acc, True, True, ledger, kc, sc_vg, th, v, lm64, s, True, False, ca, cb, lr,
                             a2, dahk, hk, g, lm, z, lane, one)
        elif step:
            kept = _record_1(row, grp, m, acc, True, False, ledger, kc, sc_vg, th, v, lm64, s, True, False, ca, cb, lr,
                             a2, dahk, hk, g, lm, z, lane, one)
        if kept < 0:  # no step, or a lane dropped (or padding): the state as it is now, masked
            kept = _record_1(row, grp, m, acc, heavy, problem == PROBLEM_QUADRATIC, ledger, kc, sc_vg, th, v, lm64, s,
                             False, True, ca, cb, lr, a2, dahk, hk, g, lm, z, lane, one)
    else:
        fm = np.float64(m)
        # +inf, "not passed yet", as a value the compiler cannot see: with the constant it proves
        # min(old, inf) == old and turns the min's unconditional store into a masked store again
        never = limit * 0.0 + np.inf
        initial = m == 0
        _observe(heavy, problem, th, v, lm64, g64, L64, s)
        for j in range(GROUP):
            _record_lane(j, s[R_VV * GROUP + j], s[R_VG * GROUP + j], s[R_LOSS * GROUP + j], s, fm, never, kc,
                         sc_vg, limit, n_active, initial, ledger)
        kept = np.int64(_row_sum(s, R_SUM))  # the count column: a sum of ones, exact
        if row >= 0:
            acc[row, grp, 0] = np.float64(kept)
            for c in range(1, N_COLUMNS):
                acc[row, grp, c] = _row_sum(s, R_SUM + c) if ledger or c < N_QUANTITIES else 0.0
    if kept < GROUP:  # diverged lanes (and padding) get a NaN state, so they stay diverged
        for k in range(dim):
            for j in range(GROUP):
                dropped = not ((s[R_INE * GROUP + j] <= limit) & (j < n_active))
                th[k, j] = np.nan if dropped else th[k, j]
                v[k, j] = np.nan if dropped else v[k, j]
        if ledger:
            for j in range(GROUP):
                dropped = not ((s[R_INE * GROUP + j] <= limit) & (j < n_active))
                s[R_D * GROUP + j] = np.nan if dropped else s[R_D * GROUP + j]
                s[R_Q * GROUP + j] = np.nan if dropped else s[R_Q * GROUP + j]
    return kept


def _row_sum_codegen(context, builder, sig, args):
    """Vector IR of `_row_sum` (the loop vectoriser leaves an ordered reduction scalar): partials
    0..3 in one <4 x double>, 4..7 in another, the same adds in the same order."""
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    i32, i64 = ir.IntType(32), ir.IntType(64)
    first = builder.mul(context.cast(builder, args[1], sig.args[1], types.int64), ir.Constant(i64, GROUP))
    vty = ir.VectorType(ir.DoubleType(), 4)
    rows = builder.bitcast(builder.gep(arr.data, [first]), vty.as_pointer())

    def load(i):  # lanes 4 i .. 4 i + 3 of the row
        return builder.load(builder.gep(rows, [ir.Constant(i64, i)]), align=8, typ=vty)

    lo, hi = load(0), load(1)  # partials 0..3 and 4..7
    for i in range(1, GROUP // SUM_WAYS):
        lo = builder.fadd(lo, load(2 * i))
        hi = builder.fadd(hi, load(2 * i + 1))
    c = builder.fadd(lo, hi)  # (a0 + a4, a1 + a5, a2 + a6, a3 + a7)
    pair = builder.fadd(builder.shuffle_vector(c, c, ir.Constant(ir.VectorType(i32, 2), [0, 1])),
                        builder.shuffle_vector(c, c, ir.Constant(ir.VectorType(i32, 2), [2, 3])))
    return builder.fadd(builder.extract_element(pair, ir.Constant(i32, 0)),
                        builder.extract_element(pair, ir.Constant(i32, 1)))


@intrinsic
def _row_sum(typingctx, s, r):
    """The sum of row r (of the packed float64 scratch s) over its 64 lanes in a fixed order:
    SUM_WAYS = 8 interleaved partial sums (lane j into partial j % 8, in lane order), then the
    fixed tree ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). The order depends on nothing but
    the lane, so the sums are the same bits whatever the thread count, chunking or schedule.
    Emitted as <4 x double> IR (two AVX2 accumulators): written as scalar code the compiler keeps
    the eight partials as scalar add chains (64 vaddsd per row)."""
    return types.float64(s, r), _row_sum_codegen


# --- the kernel ----------------------------------------------------------------------------

@njit(cache=True, parallel=True, error_model="numpy")
def ensemble_window(theta, mom, inertia0, first_passage, ledger_state, lam, coef, consts, obs, rec_row, init_row,
                    out, start, step_begin, step_end, init, key0, key1, integrator, problem, noise_model, noisy,
                    groups_per_task):
    """Advance trajectories [start, start + count) from step_begin to step_end, in place.

    theta, mom [count, dim] working dtype; inertia0 [count] float64; first_passage [count, 3] int32;
    lam [1 or count, dim]; coef [step_end - step_begin, 3]; consts [N_CONSTS]; obs [N_OBS] float64;
    ledger_state [count, 2] float64: cumulative (dissipated, injected) since step 0, or None: no ledger
    (a separate specialisation without its arithmetic; columns 6..8 of out are 0).
    rec_row [step_end - step_begin] int32; out [n_records, n_groups, N_COLUMNS] float64: every
    element of the recorded rows is written.
    init != 0: draw the initial state (step_begin must be 0) instead of reading theta/mom.
    noisy == 0: every noise scale is zero, so the Philox draws are skipped (the noise stays 0).
    groups_per_task: groups a parallel task walks through with one set of scratch arrays (any
    value gives the same result: each group is computed alone).
    """
    count = theta.shape[0]
    dim = theta.shape[1]
    dt = theta.dtype
    n_groups = (count + GROUP - 1) // GROUP
    n_tasks = (n_groups + groups_per_task - 1) // groups_per_task
    for task in prange(n_tasks):
        # scratch of one task, [dim, GROUP] blocks (trajectories minor: the lane loops vectorise)
        th, v, g, lm = (np.empty((dim, GROUP), dt), np.empty((dim, GROUP), dt), np.empty((dim, GROUP), dt),
                        np.empty((dim, GROUP), dt))
        L, sc = np.empty(GROUP, dt), np.empty(GROUP, dt)  # loss, noise scale
        z, w = np.zeros((4, dim, GROUP), dt), np.empty((4, GROUP), np.uint32)  # normals, Philox words
        lm64, g64, L64 = np.empty((dim, GROUP)), np.empty((dim, GROUP)), np.empty(GROUP)  # float64 observables
        s64 = np.empty(N_ROWS * GROUP)  # the packed rows R_*
        for grp in range(task * groups_per_task, min((task + 1) * groups_per_task, n_groups)):
            _advance_group(grp, th, v, g, lm, L, sc, z, w, lm64, g64, L64, s64, theta, mom, inertia0,
                           first_passage, ledger_state, lam, coef, consts, obs, rec_row, init_row, out, start, step_begin,
                           step_end, init, key0, key1, integrator, problem, noise_model, noisy)


@njit(error_model="numpy", _nrt=False)
def _advance_group(grp, th, v, g, lm, L, sc, z, w, lm64, g64, L64, s, theta, mom, inertia0,
                   first_passage, ledger_state, lam, coef, consts, obs, rec_row, init_row, acc, start, step_begin, step_end,
                   init, key0, key1, integrator, problem, noise_model, noisy):
    """One group through the window: load (or draw) its state, step, record, store."""
    count = theta.shape[0]
    dim = th.shape[0]
    one = consts[K_ONE]
    lr = consts[K_LR]
    h = consts[K_H]
    half_h = consts[K_HALF_H]
    half_lr = obs[O_HALF_LR]
    h2_8 = obs[O_H2_8]
    limit = obs[O_DIVERGE]
    heavy = integrator == INTEGRATOR_HEAVY_BALL
    ledger = has_ledger(ledger_state)
    hk = half_lr if heavy else 0.5  # K = hk |m|^2
    loss_scaled = noise_model == NOISE_MODEL_LOSS_SCALED
    k0 = np.uint64(key0)
    k1 = np.uint64(key1)
    lo = grp * GROUP
    n_active = min(GROUP, count - lo)
    base = np.uint64(start + lo)
    lam_shared = lam.shape[0] == 1
    for j in range(GROUP):
        src = min(lo + j, count - 1)  # padding lanes copy the last trajectory and are never stored or summed
        for k in range(dim):
            lm[k, j] = lam[0, k] if lam_shared else lam[src, k]
            lm64[k, j] = np.float64(lm[k, j])
        if init == 0:
            for k in range(dim):
                th[k, j] = theta[src, k]
                v[k, j] = mom[src, k]
            for f in range(3):
                passed = first_passage[src, f]
                s[(R_FP + f) * GROUP + j] = np.inf if passed < 0 else np.float64(passed)
                # a lane that has passed: threshold -inf (never hits again; its first passage stays)
                s[(R_THR + f) * GROUP + j] = -np.inf if passed >= 0 else obs[O_FRAC + f] * inertia0[src]
            s[R_I0 * GROUP + j] = inertia0[src]
    for j in range(GROUP):
        s[R_LIMIT * GROUP + j] = limit if j < n_active else np.nan
    s[R_GROUP * GROUP + 1] = -1.0  # no I_0 sum formed yet
    if init == 0:
        _refresh_next(s)
    if ledger_state is not None:
        for j in range(GROUP):
            src = min(lo + j, count - 1)
            s[R_D * GROUP + j] = 0.0 if init != 0 else ledger_state[src, 0]
            s[R_Q * GROUP + j] = 0.0 if init != 0 else ledger_state[src, 1]
    # One call site per stage: with init, iteration n = -1 draws the initial state and records it
    # through the same `_draw` and `_record` as the steps (each inlined call site is a whole copy
    # of its code for the compiler: one copy each halves the kernel's compile time).
    for n in range(step_begin - 1 if init != 0 else step_begin, step_end):
        initial = n < step_begin
        lane = n & 3
        if n == step_begin:  # the state the steps start from: its gradient, and no noise unless drawn
            _grad_loss(problem, th, lm, g, L, one)
            if noisy == 0:
                z[:] = 0
        if initial or (noisy != 0 and (lane == 0 or n == step_begin)):
            quad = np.uint64(0) if initial else np.uint64(n >> 2)
            tag = np.uint64(TAG_INIT) if initial else np.uint64(TAG_STEP)
            for k in range(dim):
                _draw(z, k, base, quad, tag, k0, k1, w, one)
        fuse = False
        if initial:
            for k in range(dim):
                for j in range(GROUP):
                    th[k, j] = consts[K_INIT_THETA] * z[0, k, j]
                    yy = consts[K_INIT_V] * z[1, k, j]
                    v[k, j] = -yy / lr if heavy else yy
            s[R_FP * GROUP:(R_FP + 3) * GROUP] = np.inf
            s[R_THR * GROUP:(R_THR + 3) * GROUP] = -np.inf  # no first passage at step 0
            _refresh_next(s)
            row = init_row
            ca, cb = one, one
        else:
            r = n - step_begin
            row = rec_row[r]
            ca, cb = coef[r, 0], coef[r, 1]
            # a recorded heavy-ball step on d = 1 (noise not loss-scaled) is taken by `_record_1` (its step pass)
            fuse = row >= 0 and heavy and dim == 1 and problem != PROBLEM_ROSENBROCK and not loss_scaled
            if not fuse:
                _step(integrator, problem, loss_scaled, ledger, ca, cb, coef[r, 2], lr, h, half_h, hk, th, v, g, L,
                      lm, z, lane, sc, s, one)
        if row >= 0 or initial:  # the initial state is recorded (its inertia is I_0) even without a row
            a2, dahk = _ledger_factors(1.0 if initial else np.float64(ca), hk)
            _record(row, grp, n + 1, acc, heavy, problem, ledger, half_lr, h2_8, limit, th, v, lm64, g64, L64, s,
                    n_active, fuse, ca, cb, lr, a2, dahk, hk, g, lm, z, lane, one)
        if initial:  # I_0 and the first-passage thresholds f I_0 from the initial record
            for j in range(GROUP):
                for f in range(3):
                    s[(R_THR + f) * GROUP + j] = obs[O_FRAC + f] * s[R_INE * GROUP + j]
                s[R_I0 * GROUP + j] = s[R_INE * GROUP + j]
            _refresh_next(s)
            for j in range(n_active):
                inertia0[lo + j] = s[R_INE * GROUP + j]
    for j in range(n_active):
        i = lo + j
        for k in range(dim):
            theta[i, k] = th[k, j]
            mom[i, k] = v[k, j]
        for f in range(3):
            passed = s[(R_FP + f) * GROUP + j]
            first_passage[i, f] = np.int32(-1) if passed == np.inf else np.int32(passed)
    if ledger_state is not None:
        for j in range(n_active):
            ledger_state[lo + j, 0] = s[R_D * GROUP + j]
            ledger_state[lo + j, 1] = s[R_Q * GROUP + j]
