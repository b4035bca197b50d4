"""The offline kernel gate: what each float32 kernel would cost on an H100, and whether it may.

``python -m gpudl.kernels --gate`` compiles every ``*_cuda`` module's ``SIGNATURES`` entry
``(kernel, [signature, ...], Budget(...))`` for sm_90 (its float32 signatures only), assembles the
PTX with ``ptxas -v`` and disassembles the cubin with ``cuobjdump -sass``, both from the
``nvidia-cuda-nvcc`` / ``nvidia-cuda-cuobjdump`` wheels (the test extra), then reports per kernel:

- registers, spill bytes (stores + loads), stack frame and static shared memory (``ptxas -v``);
- threads per block and dynamic shared memory (from the budget: the launcher's choice), and the
  theoretical occupancy on an H100 SM that follows (``occupancy``);
- fp64 SASS instructions (none belong in a float32 kernel);
- the hot loop: an innermost loop of the SASS (a backward branch closes a loop; the one with the
  most FFMA/HMMA wins, then the most deeply nested, then the longest) and its FFMA/HMMA share
  (and, for tensor-core kernels, its HMMA share alone);
  the local-memory instructions (LDL/STL) and calls to the 64-bit integer division subroutine of
  every innermost loop (``any hot loop`` in the budgets), and those calls in the whole kernel
  (``Budget.max_div64``, for the kernels whose index math is meant to be division-free or 32-bit).

A kernel fails when a figure breaks its budget (``Report.violations``), or when its entry has no
budget at all (a 2-tuple). Nothing here needs a GPU or a driver.
"""

import importlib.util
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

from . import fast_launch
from .budget import Budget
from .launch import compile_options

TARGET = (9, 0)

# H100 (sm_90) per-SM limits, from NVIDIA's occupancy calculator for compute capability 9.0.
SM_REGISTERS = 65536
REGISTER_UNIT = 256                 # registers are allocated per warp in units of 256
SM_SHARED = 228 * 1024
BLOCK_SHARED_MAX = 227 * 1024       # the most one block may use
BLOCK_SHARED_RESERVED = 1024        # the runtime keeps 1 KB per resident block
SM_WARPS = 64
SM_BLOCKS = 32
WARP = 32

_FMA = ("FFMA", "HMMA", "HGMMA", "FFMA2")
_HMMA = ("HMMA", "HGMMA")
_LOCAL = ("LDL", "STL")
_FP64 = ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX", "DMMA")


# --------------------------------------------------------------------------- tools
def tool(name):
    """Path of ``ptxas`` / ``cuobjdump`` from the installed NVIDIA CUDA wheels (cu13 layout
    ``nvidia/cu13/bin``, cu12 layout ``nvidia/cuda_nvcc/bin`` etc.), never a system path."""
    candidates = []
    for package in ("nvidia.cu13", "nvidia.cuda_nvcc", "nvidia.cuda_cuobjdump"):
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(os.path.join(root, "bin", name))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise RuntimeError(
        f"kernel gate: {name} not found in the NVIDIA CUDA wheels (looked in "
        f"{candidates or 'no nvidia.cu13 package'}); install the test extra "
        "(pip install 'nvidia-cuda-nvcc==13.5.*' 'nvidia-cuda-cuobjdump==13.5.*' "
        "'nvidia-cuda-nvdisasm==13.5.*')")


def assemble(ptx, workdir):
    """(ptxas -v text, cuobjdump -sass text) for one PTX module compiled for sm_90."""
    arch = f"sm_{TARGET[0]}{TARGET[1]}"
    ptx_path, cubin = os.path.join(workdir, "k.ptx"), os.path.join(workdir, "k.cubin")
    with open(ptx_path, "w") as f:
        f.write(ptx)
    # a kernel calling libcudadevrt (a grid barrier) assembles as relocatable code, as Numba
    # links it; the call's register saves then show in the caller's stack and spill figures
    relocatable = ["-c"] if ".extern .func" in ptx else []
    info = subprocess.run([tool("ptxas"), "-v", *relocatable, f"-arch={arch}", ptx_path, "-o",
                           cubin],
                          capture_output=True, text=True)
    if info.returncode:
        raise RuntimeError(f"ptxas failed: {info.stderr.strip()[:2000]}")
    sass = subprocess.run([tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True)
    if sass.returncode:
        raise RuntimeError(f"cuobjdump failed: {sass.stderr.strip()[:2000]}")
    return info.stdout + info.stderr, sass.stdout


# --------------------------------------------------------------------------- ptxas -v
@dataclass
class Resources:
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0          # static shared memory, bytes

    @property
    def spills(self):
        return self.spill_stores + self.spill_loads


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text):
    """{entry function name: Resources} from ``ptxas -v`` output (non-entry functions, such as
    ptxas's own slow-path subroutines, are left out)."""
    entries, frames = {}, {}
    entry = props = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
            entries[entry] = Resources()
        elif m := _PROPS.search(line):
            props = m.group(1)
        elif (m := _FRAME.search(line)) and props is not None:
            frames[props] = tuple(int(g) for g in m.groups())
        elif (m := _USED.search(line)) and entry is not None:
            entries[entry].registers = int(m.group(1))
            if s := _SMEM.search(line):
                entries[entry].shared = int(s.group(1))
    for name, res in entries.items():
        res.stack, res.spill_stores, res.spill_loads = frames.get(name, (0, 0, 0))
    return entries


# --------------------------------------------------------------------------- SASS
@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str              # with modifiers: "ISETP.GE.AND"
    operands: str
    never: bool = False      # predicated on @!PT: padding that never executes (ptxas puts three
                             # before each LDGSTS), counted as a NOP is
    @property
    def base(self):
        return self.opcode.split(".")[0]


_SASS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_HEX = re.compile(r"0x([0-9a-f]+)")


def parse_sass(text):
    """{function name: [Instruction, ...]} from ``cuobjdump -sass`` output."""
    functions, current = {}, None
    for line in text.splitlines():
        if "Function :" in line:
            current = functions.setdefault(line.split("Function :", 1)[1].strip(), [])
        elif current is not None and (m := _SASS.search(line)):
            current.append(Instruction(int(m.group(1), 16), m.group(3), m.group(4).strip(),
                                       (m.group(2) or "").strip() == "@!PT"))
    return functions


def _branch_target(ins):
    if ins.base in ("BRA", "JMP") and (targets := _HEX.findall(ins.operands)):
        return int(targets[-1], 16)
    return None


def loops(instructions):
    """Loops as (header address, last address) pairs: each backward branch closes one; branches
    back to the same header merge. A branch to itself (the padding after EXIT) is no loop."""
    ends = {}
    for ins in instructions:
        target = _branch_target(ins)
        if target is not None and target < ins.address:
            ends[target] = max(ends.get(target, target), ins.address)
    return sorted(ends.items())


def innermost(spans):
    """The loops that contain no other loop, each with its nesting depth (1 = outermost)."""
    result = []
    for s in spans:
        inside = [o for o in spans if o != s and s[0] <= o[0] and o[1] <= s[1]]
        if not inside:
            depth = sum(1 for o in spans if o[0] <= s[0] and s[1] <= o[1])
            result.append((s, depth))
    return result


def _div64_subroutines(instructions):
    """Start addresses of the subroutines ptxas emits for 64-bit integer division/remainder
    (they convert the 64-bit divisor to float: I2F.U64 / F2I.U64); float division slow paths,
    also reached by CALL, do not count."""
    starts = {int(_HEX.findall(i.operands)[-1], 16) for i in instructions
              if i.base == "CALL" and _HEX.findall(i.operands)}
    found = set()
    for start in starts:
        for ins in instructions:
            if ins.address < start:
                continue
            if ins.base == "RET":
                break
            if ins.base in ("I2F", "F2I") and (".U64" in ins.opcode or ".S64" in ins.opcode):
                found.add(start)
                break
    return found


@dataclass
class LoopMix:
    span: tuple = (0, 0)
    depth: int = 0
    instructions: int = 0
    fma: int = 0
    local: int = 0
    div64: int = 0
    hmma: int = 0

    @property
    def fma_share(self):
        return self.fma / self.instructions if self.instructions else 0.0

    @property
    def hmma_share(self):
        return self.hmma / self.instructions if self.instructions else 0.0


def loop_mix(instructions, span, depth=0, div64_subs=frozenset()):
    """Instruction mix of the loop ``span`` (NOPs and never-executed padding left out)."""
    body = [i for i in instructions
            if span[0] <= i.address <= span[1] and i.base != "NOP" and not i.never]
    div64 = sum(1 for i in body if i.base == "CALL" and _HEX.findall(i.operands)
                and int(_HEX.findall(i.operands)[-1], 16) in div64_subs)
    return LoopMix(span, depth, len(body), sum(1 for i in body if i.base in _FMA),
                   sum(1 for i in body if i.base in _LOCAL), div64,
                   sum(1 for i in body if i.base in _HMMA))


@dataclass
class SassSummary:
    instructions: int = 0
    fp64: int = 0
    loops: int = 0
    hot: LoopMix | None = None                       # the hot loop (None: straight-line code)
    inner: list = field(default_factory=list)        # LoopMix of every innermost loop
    div64: int = 0                                   # 64-bit division call sites anywhere


def summarise(instructions):
    subs = _div64_subroutines(instructions)
    spans = loops(instructions)
    inner = [loop_mix(instructions, s, d, subs) for s, d in innermost(spans)]
    hot = max(inner, key=lambda m: (m.fma, m.depth, m.instructions), default=None)
    fp64 = sum(1 for i in instructions
               if i.base in _FP64 or (i.base in ("F2F", "I2F", "F2I") and ".F64" in i.opcode))
    div64 = sum(1 for i in instructions if i.base == "CALL" and _HEX.findall(i.operands)
                and int(_HEX.findall(i.operands)[-1], 16) in subs)
    return SassSummary(len(instructions), fp64, len(spans), hot, inner, div64)


# --------------------------------------------------------------------------- occupancy
def occupancy(registers, threads, shared):
    """Theoretical resident warps / 64 on an H100 SM for blocks of ``threads`` threads using
    ``registers`` per thread and ``shared`` bytes of shared memory (0.0: cannot launch)."""
    warps = -(-threads // WARP)
    per_warp = -(-registers * WARP // REGISTER_UNIT) * REGISTER_UNIT
    if warps == 0 or warps > 32 or shared > BLOCK_SHARED_MAX or per_warp * warps > SM_REGISTERS:
        return 0.0
    blocks = min(SM_BLOCKS, SM_WARPS // warps,
                 (SM_REGISTERS // per_warp) // warps if per_warp else SM_BLOCKS,
                 SM_SHARED // (shared + BLOCK_SHARED_RESERVED))
    return blocks * warps / SM_WARPS


# --------------------------------------------------------------------------- one kernel
@dataclass
class Report:
    label: str
    signature: str
    budget: Budget | None
    resources: Resources | None = None
    sass: SassSummary | None = None
    error: str = ""

    @property
    def occupancy(self):
        if self.resources is None or self.budget is None:
            return None
        return occupancy(self.resources.registers, self.budget.threads,
                         self.resources.shared + self.budget.shared_bytes)

    def violations(self):
        if self.error:
            return [self.error]
        if self.budget is None:
            return ["no budget declared"]
        r, s, b, out = self.resources, self.sass, self.budget, []
        if r.spills > b.max_spill_bytes:
            out.append(f"spills {r.spill_stores}+{r.spill_loads} B > {b.max_spill_bytes}")
        if r.stack > b.max_stack_bytes:
            out.append(f"stack {r.stack} B > {b.max_stack_bytes}")
        if self.occupancy < b.min_occupancy:
            out.append(f"occupancy {self.occupancy:.1%} < {b.min_occupancy:.0%}")
        if s.fp64:
            out.append(f"{s.fp64} fp64 instructions")
        local = max((m.local for m in s.inner), default=0)
        if local > b.max_hot_loop_local:
            out.append(f"{local} LDL/STL in a hot loop > {b.max_hot_loop_local}")
        div64 = max((m.div64 for m in s.inner), default=0)
        if div64 > b.max_hot_loop_div64:
            out.append(f"{div64} 64-bit divisions in a hot loop > {b.max_hot_loop_div64}")
        if b.max_div64 is not None and s.div64 > b.max_div64:
            out.append(f"{s.div64} 64-bit divisions in the kernel > {b.max_div64}")
        if b.min_fma_share is not None:
            share = s.hot.fma_share if s.hot else 0.0
            if share < b.min_fma_share:
                out.append(f"hot-loop FMA share {share:.0%} < {b.min_fma_share:.0%}")
        if b.min_hmma_share is not None:
            share = s.hot.hmma_share if s.hot else 0.0
            if share < b.min_hmma_share or share == 0.0:
                out.append(f"hot-loop HMMA share {share:.0%} < {b.min_hmma_share:.0%}")
        return out


def float32_signatures(signatures):
    """The signatures whose data is float32 (no float16 or float64 array or scalar)."""
    return [s for s in signatures if "float16" not in str(s) and "float64" not in str(s)]


def gated_signatures(signatures, budget):
    """What the gate compiles: float32 signatures, and for tensor-core kernels (budget with
    ``min_hmma_share``) every signature without float64."""
    if budget is not None and budget.min_hmma_share is not None:
        return [s for s in signatures if "float64" not in str(s)]
    return float32_signatures(signatures)


def entries(modules):
    """(label, kernel, signature, budget or None) for every float32 signature of every entry.
    Labels are ``module.kernel``; a name repeated in a module gets ``#2``, ``#3`` ...; a kernel
    with several float32 signatures gets ``[1]``, ``[2]`` ..."""
    out = []
    for module in modules:
        short = module.__name__.rsplit(".", 1)[-1]
        seen = {}
        for entry in module.SIGNATURES:
            kernel, signatures = entry[0], entry[1]
            budget = entry[2] if len(entry) > 2 else None
            sigs = gated_signatures(signatures, budget)
            if not sigs:
                continue
            name = getattr(kernel, "py_func", kernel).__name__
            seen[name] = seen.get(name, 0) + 1
            label = f"{short}.{name}" + (f"#{seen[name]}" if seen[name] > 1 else "")
            for n, sig in enumerate(sigs, 1):
                out.append((label + (f"[{n}]" if len(sigs) > 1 else ""), kernel, sig, budget))
    return out


def analyse(label, kernel, signature, budget, workdir, ptx=None):
    """Compile (unless its sm_90 ``ptx`` is given), assemble and summarise one kernel."""
    from numba import cuda

    report = Report(label, str(signature), budget)
    try:
        if ptx is None:
            ptx, _ = cuda.compile_ptx(getattr(kernel, "py_func", kernel), signature, cc=TARGET,
                                      **compile_options(kernel))
        info, sass = assemble(ptx, workdir)
        report.error = fast_launch.check_layout(ptx, signature)
        if report.error:          # CuPy's launcher would pass other parameters than the PTX's
            return report
    except Exception as exc:  # noqa: BLE001 - a failed compile is a failed kernel, reported
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        report.error = f"{type(exc).__name__}: {first}"
        return report
    resources, functions = parse_ptxas(info), parse_sass(sass)
    if len(resources) != 1 or len(functions) != 1:
        report.error = f"expected one entry function, found {len(resources)} / {len(functions)}"
        return report
    report.resources = next(iter(resources.values()))
    report.sass = summarise(next(iter(functions.values())))
    return report


# --------------------------------------------------------------------------- the table
HEADER = ("kernel", "regs", "spill st/ld B", "stack B", "smem B", "threads", "occupancy", "fp64",
          "hot loop: instr", "FMA share", "HMMA share", "LDL/STL", "div64", "verdict")


def row(report):
    bad = report.violations()
    verdict = "ok" if not bad else "FAIL: " + "; ".join(bad)
    if report.resources is None:
        return (report.label,) + ("",) * (len(HEADER) - 2) + (verdict,)
    r, s, b = report.resources, report.sass, report.budget
    hot = s.hot
    occ = report.occupancy
    return (report.label, str(r.registers), f"{r.spill_stores} / {r.spill_loads}", str(r.stack),
            str(r.shared + (b.shared_bytes if b else 0)), str(b.threads) if b else "?",
            f"{occ:.1%}" if occ is not None else "?", str(s.fp64),
            f"{hot.instructions} (depth {hot.depth})" if hot else "no loop",
            f"{hot.fma_share:.0%}" if hot else "-",
            f"{hot.hmma_share:.0%}" if hot and hot.hmma else "-",
            str(max((m.local for m in s.inner), default=0)),
            str(max((m.div64 for m in s.inner), default=0)), verdict)


def markdown(reports):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in reports]
    return "\n".join(lines) + "\n"


def text_table(reports):
    rows = [HEADER] + [row(r) for r in reports]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
                     for r in rows)


def gate(modules, markdown_path=None, out=print, compiled=None, workers=1, reports=None):
    """Gate every float32 kernel of ``modules``; print the table, write it as markdown when
    asked; return the number of failing kernels. ``compiled`` maps (kernel, signature string)
    to sm_90 PTX already compiled (``--check --gate`` compiles each kernel once), ``reports`` to
    a Report already made (``--check --gate`` gates a kernel where it compiled it; keyed by the
    kernel as in ``SIGNATURES``). ``workers``
    threads each run one kernel's ptxas and cuobjdump at a time (subprocesses: no GIL)."""
    from concurrent.futures import ThreadPoolExecutor
    tool("ptxas"), tool("cuobjdump")        # a clear error before any compilation
    compiled, reports = compiled or {}, reports or {}

    def report(n, entry):
        label, kernel, sig, budget = entry
        if (done := reports.get((kernel, str(sig)))) is not None:
            return done
        kernel_dir = os.path.join(workdir, str(n))          # ptxas's files, one folder each
        os.mkdir(kernel_dir)
        return analyse(label, kernel, sig, budget, kernel_dir,
                       compiled.get((getattr(kernel, "py_func", kernel), str(sig))))

    from .numba_inlining import callee_cache
    todo = entries(modules)
    with tempfile.TemporaryDirectory(prefix="gpudl-gate-") as workdir, callee_cache(), \
            ThreadPoolExecutor(max(1, workers)) as pool:
        reports = list(pool.map(report, range(len(todo)), todo))
    out(text_table(reports))
    failures = sum(1 for r in reports if r.violations())
    out(f"{len(reports) - failures} kernels within budget, {failures} over or undeclared "
        f"(sm_{TARGET[0]}{TARGET[1]}, H100 occupancy)")
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(markdown(reports))
    return failures
