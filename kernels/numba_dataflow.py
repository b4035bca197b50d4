"""Three of numba-cuda's dataflow passes, with the same results, without their quadratic work.

An inlined helper's loop counters and accumulators, copied into a kernel at every call site, give
a tensor-core attention kernel thousands of blocks and tens of thousands of variables. numba-cuda
0.30's SSA reconstruction and liveness analyses then cost about a third of its Python compile,
on the check's cores as at a GPU's first launch (benchmarks/RESULTS.md, "Session 22"):

- **SSA reconstruction** (``numba.cuda.core.ssa._run_ssa``) fixes one SSA-violating variable
  (one assigned more than once) at a time, and for each one rewrites every statement of every
  block twice: once to give each assignment a fresh name, once to point each use at its reaching
  definition. Work: violators x statements. ``run_ssa`` does the same rewrites with numba's own
  handlers, in the same order, over only the blocks that name the variable (one pass over the
  function finds them). A block that never names it gives the handlers nothing to do: its
  statements come back unchanged and no definition is looked up from it, so every fresh name,
  phi node and replacement is made as numba makes it.
- **Liveness** (``compute_live_map`` and ``compute_live_variables`` of
  ``numba.cuda.core.analysis``, run by every ``PostProcessor``, i.e. after most passes) iterate
  fixed points whose every step unions Python sets of thousands of names along every CFG edge.
  Ours run the same iterations, in the same block order, on bit sets (one Python int a block, a
  bit a variable), and hand back the same sets of names.

The PTX of every kernel of ``python -m gpudl.kernels --check`` is the same byte for byte with and
without them (RESULTS; tests/kernels/test_numba_dataflow.py compares every liveness result of a
compile and the PTX). ``apply()`` installs them; on a numba-cuda laid out otherwise it does
nothing (``applied()`` says so, and a test fails).
"""

import functools
import sys
from collections import defaultdict

import numpy as np


_SSA_NAMES = ("_run_ssa", "_iterated_domfronts", "_find_defs_violators", "_CacheListVars",
              "_FreshVarHandler", "_FixSSAVars", "_compute_phi_locations", "_run_ssa_block_pass",
              "compute_cfg_from_blocks", "errors", "ir")
_LIVENESS_NAMES = ("compute_live_map", "compute_live_variables")


def _layout():
    """(numba-cuda's ssa module, its analysis module), or None where they are not laid out as
    in numba-cuda 0.30."""
    try:
        from numba.cuda.core import analysis, ssa
    except ImportError:
        return None
    if all(hasattr(ssa, n) for n in _SSA_NAMES) and all(hasattr(analysis, n)
                                                        for n in _LIVENESS_NAMES):
        return ssa, analysis
    return None


# --------------------------------------------------------------------------- SSA reconstruction
def _labels_naming(blocks, names):
    """{name: labels of the blocks whose statements mention it, in block order} for ``names``."""
    labels = defaultdict(list)
    for label, block in blocks.items():
        named = set()
        for stmt in block.body:
            named.update(var.name for var in stmt.list_vars())
        for name in named.intersection(names):
            labels[name].append(label)
    return labels


def _rewrite(ssa, blocks, labels, states, handler):
    """numba's block rewrite (``_run_block_rewrite``) over ``labels`` only, in place in
    ``blocks`` (``run_ssa``'s own copies)."""
    for label in labels:
        block = blocks[label]
        states["label"], states["block"] = label, block
        block.body = list(ssa._run_ssa_block_pass(states, block, handler))


def _copy(ssa, block):
    copied = ssa.ir.Block(scope=block.scope, loc=block.loc)
    copied.body = list(block.body)
    return copied


def run_ssa(ssa, blocks):
    """What numba-cuda's ``ssa._run_ssa`` (``ssa``: its SSA module) returns for ``blocks``: new
    blocks in SSA form (the given blocks are not changed; unchanged statements are shared, as
    numba shares them)."""
    if not blocks:
        return {}
    cfg = ssa.compute_cfg_from_blocks(blocks)
    df_plus = ssa._iterated_domfronts(cfg)
    violators = ssa._find_defs_violators(blocks, cfg)
    cache_list_vars = ssa._CacheListVars()
    blocks = {label: _copy(ssa, block) for label, block in blocks.items()}
    scope = next(iter(blocks.values())).scope
    where = _labels_naming(blocks, violators)
    for varname in violators:
        labels = where[varname]
        defmap = defaultdict(list)
        _rewrite(ssa, blocks, labels, {"scope": scope, "varname": varname, "defmap": defmap},
                 ssa._FreshVarHandler())
        phimap = defaultdict(list)
        states = {"scope": scope, "varname": varname, "defmap": defmap, "phimap": phimap,
                  "cfg": cfg, "phi_locations": ssa._compute_phi_locations(df_plus, defmap)}
        _rewrite(ssa, blocks, labels, states, ssa._FixSSAVars(cache_list_vars))
        for label, phis in phimap.items():
            blocks[label].body = phis + blocks[label].body
    if ssa.compute_cfg_from_blocks(blocks) != cfg:
        raise ssa.errors.CompilerError("CFG mutated in SSA pass")
    return blocks


# --------------------------------------------------------------------------- liveness
class _BitSets:
    """Sets of variable names as Python ints: bit i for ``names[i]``."""

    def __init__(self, *maps):
        self.names = sorted({name for m in maps for names in m.values() for name in names})
        self.index = {name: i for i, name in enumerate(self.names)}
        self.nbytes = len(self.names) // 8 + 1

    def bits(self, names):
        buffer = bytearray(self.nbytes)
        index = self.index
        for name in names:
            i = index[name]
            buffer[i >> 3] |= 1 << (i & 7)
        return int.from_bytes(buffer, "little")

    def names_of(self, bits):
        flags = np.unpackbits(np.frombuffer(bits.to_bytes(self.nbytes, "little"), np.uint8),
                              bitorder="little")
        names = self.names
        return {names[i] for i in np.flatnonzero(flags).tolist()}


def compute_live_map(cfg, blocks, var_use_map, var_def_map):
    """What ``numba.cuda.core.analysis.compute_live_map`` returns: {block label: the variables
    that must be alive at its entry}. Its two fixed points, step for step, on bit sets."""
    sets = _BitSets(var_use_map, var_def_map)
    uses = {label: sets.bits(names) for label, names in var_use_map.items()}
    defs = defaultdict(int, {label: sets.bits(names) for label, names in var_def_map.items()})
    successors = {label: [s for s, _ in cfg.successors(label)] for label in var_def_map}
    predecessors = {label: [p for p, _ in cfg.predecessors(label)] for label in blocks}

    reach = defaultdict(int)         # variables used or defined on some path to a block's entry
    while True:
        before = dict(reach)
        for label in var_def_map:
            reach[label] |= defs[label] | uses[label]
            for successor in successors[label]:
                reach[successor] |= reach[label]
        if reach == before:
            break

    live = {label: uses[label] for label in blocks}
    while True:
        before = dict(live)
        for label in live:
            for predecessor in predecessors[label]:
                live[predecessor] |= (live[label] & reach[predecessor]) & ~defs[predecessor]
        if live == before:
            break
    return {label: sets.names_of(bits) for label, bits in live.items()}


def compute_live_variables(cfg, blocks, var_def_map, var_dead_map):
    """What ``numba.cuda.core.analysis.compute_live_variables`` returns: {block label: the
    variables available at its entry} (a defaultdict(set), keys made in the same order). Its
    fixed point, step for step, on bit sets."""
    sets = _BitSets(var_def_map, var_dead_map)
    defs = {label: sets.bits(names) for label, names in var_def_map.items()}
    dead = {label: sets.bits(names) for label, names in var_dead_map.items()}
    successors = {label: [s for s, _ in cfg.successors(label)] for label in blocks}
    entry = defaultdict(int)
    while True:
        before = dict(entry)
        for label in blocks:
            available = (entry[label] | defs[label]) & ~dead[label]
            for successor in successors[label]:
                entry[successor] |= available
        if entry == before:
            break
    return defaultdict(set, ((label, sets.names_of(bits)) for label, bits in entry.items()))


# --------------------------------------------------------------------------- installing
ORIGINALS = {}       # numba-cuda's own three, once apply() has replaced them (tests compare)


def apply():
    """Install ``run_ssa``, ``compute_live_map`` and ``compute_live_variables`` in numba-cuda,
    once: in its analysis module and in every module that imported them by name from it (one
    imported later takes them from the analysis module). Numba's own CPU compiler has the same
    code, but the CPU kernels are small: measured, no gain there."""
    layout = _layout()
    if layout is None or applied():
        return
    ssa, analysis = layout
    ORIGINALS["_run_ssa"] = ssa._run_ssa
    for name in _LIVENESS_NAMES:
        original, replacement = getattr(analysis, name), globals()[name]
        ORIGINALS[name] = original
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("numba.cuda") \
                    and getattr(module, name, None) is original:
                setattr(module, name, replacement)
    ssa._run_ssa = functools.partial(run_ssa, ssa)


def applied():
    """Whether ``apply()`` has installed the three in this process."""
    layout = _layout()
    if layout is None:
        return False
    ssa, analysis = layout
    return (getattr(ssa._run_ssa, "func", None) is run_ssa
            and all(getattr(analysis, name) is globals()[name] for name in _LIVENESS_NAMES))
