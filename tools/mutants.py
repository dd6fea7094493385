#!/usr/bin/env python3
"""Mutation testing for bitnn: are there bugs the test suite would not catch?

Each mutant below is one small semantic bug: (file, an exact snippet of the
current source, its replacement, the tests that should catch it). The driver
copies the working tree (tracked and untracked-but-not-ignored files) to a
scratch directory, builds it in place once, checks that the tests pass
unmutated, then for each mutant: writes the replacement into the scratch
copy, rebuilds if a C/Cython file changed, runs the mutant's tests with a
timeout, records the outcome and puts the file back. The developer's tree is
only read, never written.

Outcomes: killed (a test failed, the build broke or the run timed out),
survived (every test passed: a gap in the suite, or an equivalent mutant),
not applicable (the snippet is no longer in the file, or occurs more than
once: the code moved on; update the mutant).

    python3 tools/mutants.py                 # all mutants, targeted tests
    python3 tools/mutants.py --list          # show the list
    python3 tools/mutants.py --only sampler-top-k-plus-one slide-oldest-half
    python3 tools/mutants.py --suite         # the whole suite for every mutant (slow)
    python3 tools/mutants.py --json out.json --markdown out.md

Uses ccache for the rebuilds when it is installed (only the mutated C file
is then really recompiled). See docs/testing.md for the last run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE = "tests/test_core.py"
DISPATCH = "tests/test_dispatch_threads.py"
SAMPLER = "tests/test_sampler.py"
LM = "tests/test_lm.py"
GEN = "tests/test_generate.py"
CLS = "tests/test_classifier.py"
RULES = "tests/test_loader_rules.py"
FORMAT = "tests/test_format.py"
TOK = "tests/test_tokenizer.py"
NN = "tests/test_nn.py"
IMAGES = "tests/test_imageio.py"
INT8 = "tests/test_int8.py"
C_NATIVE = "tests/test_c_kernels.py::test_native_kernels_match_reference"
NUMREF = "tests/test_numpy_reference.py"


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: tuple
    what: str


def m(id, file, old, new, tests, what):
    return Mutant(id, file, old, new, tuple(tests), what)


MUTANTS = [
    # ------------------------------------------------ kernels and dispatch
    m("dispatch-avx512-entry-is-avx2", "csrc/kernels/cpu.c",
      "static const bitnn_kernel_set avx512_gfni = {bitnn_gemm_f32_avx512,",
      "static const bitnn_kernel_set avx512_gfni = {bitnn_gemm_f32_avx2,",
      [DISPATCH], "the AVX-512 table entry (of CPUs with VNNI, VBMI and GFNI, no AMX: every "
      "machine of these benchmarks but the AMX Xeon) points at the AVX2 function"),
    m("dispatch-prefers-avx2", "csrc/kernels/cpu.c",
      "{BITNN_ISA_AVX512, BITNN_ISA_AVX2, BITNN_ISA_NEON}",
      "{BITNN_ISA_AVX2, BITNN_ISA_AVX512, BITNN_ISA_NEON}",
      [CORE, DISPATCH], "the default kernel is AVX2 even where AVX-512 runs"),
    m("dispatch-env-ignored", "csrc/kernels/cpu.c",
      'if (env && *env && strcmp(env, "auto") != 0) {', "if (0) {",
      [CORE, DISPATCH], "BITNN_KERNEL is ignored"),
    m("ref-chain-order", "csrc/kernels/kernel_ref.c",
      "for (size_t g = 0; g < 8 * kc; g++)\n"
      "                acc += ((const float *)tp[m * kc + g / 8])",
      "for (size_t g = 8 * kc; g-- > 0;)\n"
      "                acc += ((const float *)tp[m * kc + g / 8])",
      [CORE, C_NATIVE], "the reference adds the groups in decreasing order"),
    m("ref-index-nibble", "csrc/kernels/kernel_common.h",
      "return (tiles[((n / 16) * kc + g / 8) * 16 + n % 16] >> (4 * (g % 8))) & 15u;",
      "return (tiles[((n / 16) * kc + g / 8) * 16 + n % 16] >> (4 * (7 - g % 8))) & 15u;",
      [CORE, C_NATIVE], "group g's index read from the wrong nibble of the tile word"),
    m("table-order", "csrc/kernels/ops.c",
      "        a += (s & 2) ? x1 : 0.0f;\n        a += (s & 4) ? x2 : 0.0f;",
      "        a += (s & 4) ? x2 : 0.0f;\n        a += (s & 2) ? x1 : 0.0f;",
      [CORE, C_NATIVE], "a subset sum adds its second and third inputs in the other order "
      "(the first two would be equivalent: 0 + x0 = x0 and addition commutes)"),
    m("ref-bias-dropped", "csrc/kernels/kernel_ref.c",
      "z[m * ldz + n] = acc + bitnn_bias_value(bias, n);", "z[m * ldz + n] = acc;",
      [CORE], "the reference kernel ignores the bias bits"),
    m("avx2-blend-bit", "csrc/kernels/kernel_avx2.c",
      "_mm256_slli_epi32(ix, 28)", "_mm256_slli_epi32(ix, 29)",
      [CORE, C_NATIVE], "AVX2 chooses the table half by bit 2 of the index instead of bit 3"),
    m("avx2-bias-dropped", "csrc/kernels/kernel_common.h",
      "if ((in >> r) & 1u) z[r] = v[r] + (float)((bb >> r) & 1u);",
      "if ((in >> r) & 1u) z[r] = v[r];",
      [CORE], "the AVX2 (and NEON) block store ignores the bias bits"),
    m("avx512-tail-rows", "csrc/kernels/kernel_common.h",
      "const size_t lo = n0 > b ? n0 - b : 0, hi = n1 < b + 16 ? n1 - b : 16;",
      "const size_t lo = n0 > b ? n0 - b : 0, hi = 16;",
      [CORE, C_NATIVE], "the block store writes rows past the caller's range"),
    m("bias-bit-index", "csrc/kernels/kernels.h",
      "(bias[n >> 6] >> (n & 63)) & 1u", "(bias[n >> 6] >> (n & 31)) & 1u",
      [CORE], "bias bit n read from the wrong bit of its word"),
    m("gemm-split-drops-last-column", "csrc/kernels/ops.c",
      "gemm_block(j, m0, m1, 0, j->N);", "gemm_block(j, m0, m1, 0, j->N - 1);",
      [CORE], "the split over input rows skips the last output column"),
    # ------------------------------------------------ Normalize and activations
    m("norm-variance-n-plus-1", "csrc/kernels/ops.c",
      "*inv_out = 1.0 / sqrt(ss / (double)N + eps);",
      "*inv_out = 1.0 / sqrt(ss / (double)(N + 1) + eps);",
      [CORE], "Normalize divides the squared deviations by N + 1"),
    m("norm-mean-n-minus-1", "csrc/kernels/ops.c",
      "const double mean = sum / (double)N;", "const double mean = sum / (double)(N - 1);",
      [CORE], "Normalize's mean divides by N - 1"),
    m("norm-threaded-variance-n-plus-1", "csrc/kernels/ops.c",
      "j.inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)N + j.eps);",
      "j.inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)(N + 1) + j.eps);",
      [DISPATCH], "variance divided by N + 1 only in the threaded long-row path"),
    m("norm-threaded-eps-fixed", "csrc/kernels/ops.c",
      "j.inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)N + j.eps);",
      "j.inv = 1.0 / sqrt(ordered_sum(j.partial, chunks) / (double)N + 1e-5);",
      [DISPATCH], "the threaded long-row path uses 1e-5 instead of the eps passed in"),
    m("norm-threaded-chunks-reversed", "csrc/kernels/ops.c",
      "for (size_t i = 0; i < n; i++) s += v[i];", "for (size_t i = n; i-- > 0;) s += v[i];",
      [DISPATCH], "the threaded path adds the chunk sums last to first"),
    m("norm-threaded-softmax-no-max", "csrc/kernels/ops.c",
      "if (act == BITNN_ACT_SOFTMAX) j.mx = norm_value_max(z, N, j.mean, j.inv);",
      "if (0) j.mx = norm_value_max(z, N, j.mean, j.inv);",
      [DISPATCH], "the threaded softmax does not subtract the maximum"),
    m("norm-chunk-lanes", "csrc/kernels/kernels.h",
      "return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));",
      "return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));",
      [CORE, DISPATCH], "the 8 partial sums of a chunk are combined in another order"),
    m("gelu-tanh-approximation", "csrc/kernels/ops.c",
      "BITNN_GELU16(g, __builtin_convertvector(d, bitnn_gelu_v16f));",
      "{ const bitnn_gelu_v16f u_ = __builtin_convertvector(d, bitnn_gelu_v16f); "
      "for (int i_ = 0; i_ < 16; i_++) g[i_] = (float)(0.5 * u_[i_] * (1.0 + tanh("
      "0.7978845608028654 * (u_[i_] + 0.044715 * u_[i_] * u_[i_] * u_[i_])))); }",
      [CORE], "gelu by its tanh approximation"),
    m("gelu-tail-tanh-approximation", "csrc/kernels/ops.c",
      "bitnn_gelu16(v, v);",
      "for (int i_ = 0; i_ < 16; i_++) v[i_] = (float)(0.5 * v[i_] * (1.0 + tanh("
      "0.7978845608028654 * (v[i_] + 0.044715 * v[i_] * v[i_] * v[i_]))));",
      [CORE], "gelu by its tanh approximation on a row's last values (after the groups of 16)"),
    m("relu-leaky", "csrc/kernels/ops.c",
      "z[n] = v > 0.0f ? v : 0.0f;", "z[n] = v > 0.0f ? v : 0.01f * v;",
      [CORE], "relu leaks 1% of negative values"),
    m("softmax-unnormalised", "csrc/kernels/ops.c",
      "const double scale = 1.0 / total;", "const double scale = 1.0 / (total + 1e-3);",
      [CORE], "softmax divides by a slightly wrong total"),
    # ------------------------------------------------ int8 mode
    m("int8-round-truncates", "csrc/kernels/ops.c",
      "const bitnn_v16f v_ = ((vin) * (inv) + magic_) - magic_;",
      "const bitnn_v16f v_ = (vin) * (inv);",
      [INT8, "tests/test_quantize_ties.py"],
      "int8 quantization (16-lane path) truncates instead of rounding half to even"),
    m("int8-epilogue-order", "csrc/kernels/kernel_common.h",
      "return (float)s * scale + bitnn_bias_value(bias, n);",
      "return ((float)s + bitnn_bias_value(bias, n) / scale) * scale;",
      [INT8], "the int8 epilogue adds the bias before scaling"),
    # ------------------------------------------------ threads
    m("pool-always-serial", "csrc/kernels/threadpool.c",
      "if (!p || p->n == 1 || n <= grain) {", "if (1) {",
      [DISPATCH], "the thread pool runs every job on the caller"),
    m("pool-share-drops-last-item", "csrc/kernels/threadpool.c",
      "if (end > p->items) end = p->items;", "if (end > p->items) end = p->items - 1;",
      [CORE, DISPATCH], "the last thread's share stops one item short when it is clamped"),
    # ------------------------------------------------ convolution and pooling
    m("maxpool-is-minpool", "csrc/graph/conv.c",
      "const bitnn_v16i_pool gt = v > m;", "const bitnn_v16i_pool gt = v < m;",
      [CLS, NUMREF], "the max-pool takes the minimum of 16 channels at a time"),
    m("maxpool-tail-is-minpool", "csrc/graph/conv.c",
      "m = v > m ? v : m;", "m = v < m ? v : m;",
      [NUMREF], "the max-pool takes the minimum of the channels past the last whole 16"),
    m("relu-q8-no-relu", "csrc/kernels/ops.c",
      "const bitnn_v16f y = (bitnn_v16f)((bitnn_v16i)v & (v > 0.0f));",
      "const bitnn_v16f y = v;",
      [NUMREF], "a fused relu layer quantizes the normalized values without the relu "
      "(16 at a time)"),
    m("nchw-channels-reversed", "csrc/graph/model.c",
      "const float *xc = x + c * HW;", "const float *xc = x + (C - 1 - c) * HW;",
      [CLS], "the C graph's NCHW -> NHWC copy reverses the channels"),
    m("fused-amax-off", "csrc/graph/model.c",
      "*amax = top > 0.0f ? top : 0.0f;", "*amax = top > 0.0f ? top * 1.001f : 0.0f;",
      [NUMREF], "a fused relu layer quantizes the next convolution's input with a scale "
      "0.1% off (direct int8 convolution only)"),
    m("direct-conv-drops-last-kernel-row", "csrc/kernels/kernel_avx512_vnni.c",
      "for (size_t dy = 0; dy < f; dy++) {", "for (size_t dy = 0; dy + 1 < f; dy++) {",
      [NUMREF], "the direct int8 convolution skips the last row of taps (AVX-512 VNNI only)"),
    m("conv-ring-stale-rows", "csrc/graph/conv.c",
      "ring_fill(j, ring, t > t0 && made > lo ? made : lo, hi);",
      "ring_fill(j, ring, t > t0 ? hi : lo, hi);",
      [NUMREF], "a thread's convolution tiles after its first keep reading the input rows' "
      "tables of that first tile (the ring never gets its new rows)"),
    m("f32-tables-store-one-block", "csrc/kernels/kernel_avx512.c",
      "if (BITNN_LIVE(i, r)) tstore(a##i##r, b0 + (r), n0, n1, bias, z + (i) * ldz);",
      "if (BITNN_LIVE(i, r)) tstore(a##i##r, b0, n0, n1, bias, z + (i) * ldz);",
      [NUMREF, CORE], "the AVX-512 fp32 table kernel stores every block's sums into the "
      "first block's rows"),
    m("q8t-high-groups-use-low-index", "csrc/kernels/kernel_avx512_gfni.c",
      "lo##i##r = _mm512_dpbusd_epi32(lo##i##r, _mm512_permutexvar_epi8(br, x2), ones);",
      "lo##i##r = _mm512_dpbusd_epi32(lo##i##r, _mm512_permutexvar_epi8(a##r, x2), ones);",
      [INT8, NUMREF], "the VBMI int8 table kernel looks up groups 1, 3, 5, 7 of the low "
      "bytes with the even groups' indices"),
    m("gemm-many-first-bias", "csrc/kernels/ops.c",
      "g.j[i].bias = biases[i], g.j[i].z = zs[i], g.j[i].ldz = ldzs[i];",
      "g.j[i].bias = biases[0], g.j[i].z = zs[i], g.j[i].ldz = ldzs[i];",
      [LM], "the decoder's shared query/key/value GEMM adds the query's bias bits to all three"),
    m("attn-q8-no-offset-correction", "csrc/kernels/kernel_avx512_vnni.c",
      "_mm512_storeu_si512(S + 16 * j, _mm512_sub_epi32(acc[j], corr));",
      "_mm512_storeu_si512(S + 16 * j, acc[j]);",
      [NUMREF, INT8], "the VNNI int8 attention scores keep 128 * sum(q) from the keys' "
      "flip to unsigned bytes"),
    m("attn-q8-generic-byte-order", "csrc/graph/lm.c",
      "acc += ((bitnn_v16i_keys)(w << (24 - 8 * k)) >> 24) * (int32_t)q[4 * g + k];",
      "acc += ((bitnn_v16i_keys)(w << (8 * k)) >> 24) * (int32_t)q[4 * g + k];",
      [NUMREF, INT8], "the generic int8 attention scores pair the query's values with the "
      "key bytes in reverse order"),
    m("pool-first-no-relu", "csrc/graph/model.c",
      "mean, inv,\n                                 BITNN_ACT_RELU, pool);",
      "mean, inv,\n                                 BITNN_ACT_LINEAR, pool);",
      [NUMREF], "a relu convolution pooled before its normalization skips the relu"),
    m("pool-first-per-position", "csrc/graph/model.c",
      "return L->act == BITNN_ACT_RELU && !L->norm_per_position && i + 1 < m->first_linear &&",
      "return L->act == BITNN_ACT_RELU && i + 1 < m->first_linear &&",
      [NUMREF], "a relu convolution normalized per position is pooled before its "
      "normalization with the whole map's statistics"),
    m("avgpool-divisor", "csrc/graph/conv.c",
      "y[c] = (float)(acc[c] / (double)(H * W));", "y[c] = (float)(acc[c] / (double)(H * W + 1));",
      [CLS], "global average pool divides by H*W + 1"),
    m("conv-bias-dropped", "csrc/graph/conv.c",
      "j->w->tiles, 0, j->Cout,\n                            j->bias, z, j->Cout);",
      "j->w->tiles, 0, j->Cout,\n                            NULL, z, j->Cout);",
      [CLS], "the convolution ignores its bias bits"),
    m("conv-right-padding-not-zeroed", "csrc/graph/conv.c",
      "if (dx1 < f) memset(row + dx1 * C * es, 0, (f - dx1) * C * es);", "(void)dx1;",
      [CLS], "taps right of the image keep stale values instead of 0"),
    m("conv-norm-per-position-ignored", "csrc/graph/model.c",
      'L[i].norm_per_position = norm && strcmp(norm->str, "c") == 0;',
      "L[i].norm_per_position = 0;",
      [CLS], "norm=\"c\" convolutions normalize over the whole map"),
    # ------------------------------------------------ loader checks
    m("loader-classifier-eps-ignored", "csrc/graph/model.c",
      "m->C = C, m->H = H, m->W = W, m->eps = eps, m->layers = L;",
      "m->C = C, m->H = H, m->W = W, m->eps = 1e-5f, m->layers = L;",
      [CLS, RULES], "the classifier uses eps 1e-5 whatever the file says"),
    m("loader-conv-in-channels-unchecked", "csrc/graph/model.c",
      "else if (cin != c)", "else if (0)",
      [RULES], "a conv2d's in_channels is not checked against the incoming channels"),
    m("loader-linear-after-linear-unchecked", "csrc/graph/model.c",
      'if (i > m->first_linear && strcmp(t, "linear") != 0) {', "if (0) {",
      [RULES], "non-linear layers may follow a linear layer"),
    m("loader-labels-count", "csrc/graph/model.c",
      "labels->count != m->classes)", "labels->count < m->classes)",
      [RULES, CLS], "more labels than classes are accepted"),
    m("loader-lm-heads-divide-dim", "csrc/graph/lm.c",
      "else if (m->dim % m->heads != 0)", "else if (0)",
      [RULES, LM], "the decoder's heads-divide-dim check is removed"),
    m("loader-lm-eps-ignored", "csrc/graph/lm.c",
      "    m->eps = eps;\n", "    m->eps = 1e-5f;\n",
      [LM, RULES], "the decoder uses eps 1e-5 whatever the file says"),
    m("bnb-checksum-unchecked", "csrc/format/bnb.c",
      "if (stored != computed)", "if (0)",
      [FORMAT], "the file checksum is not checked"),
    m("bnb-padding-bits-unchecked", "csrc/format/bnb.c",
      "if (last >> used)", "if (0)",
      [FORMAT], "non-zero padding bits in packed rows are accepted"),
    # ------------------------------------------------ decoder: embedding, attention
    m("embedding-position-bias-dropped", "csrc/graph/lm.c",
      "pe[d] = bit_at(pr, d) + bit_at(m->pos_b, d);", "pe[d] = bit_at(pr, d);",
      [LM], "the position embedding ignores its bias bits"),
    m("attention-scale", "csrc/graph/lm.c",
      "const double scale = 1.0 / sqrt((double)hd);",
      "const double scale = 1.0 / sqrt((double)hd + 1);",
      [LM], "attention scores scaled by 1/sqrt(hd + 1)"),
    m("attention-misses-current-position", "csrc/graph/lm.c",
      "if (nh == 4) weighted_sum4(w, p + 1, v, ldv, hd, out, VQ8);",
      "if (nh == 4) weighted_sum4(w, p, v, ldv, hd, out, VQ8);",
      [LM], "attention leaves out the current position's value"),
    m("attention-dot-tail", "csrc/graph/lm.c",
      "        memcpy(&kv, kt + 16 * e, sizeof kv);\n        PARTIAL_ADD(e, q[e] * kv);",
      "        memcpy(&kv, kt + 16 * e, sizeof kv);\n        PARTIAL_ADD(e, q[e] * q[e]);",
      [LM], "q.k tail (head_dim % 8 values) multiplies q by itself"),
    m("attention-residual-dropped", "csrc/graph/lm.c",
      "add_rows(s->h, s->x, n * D);", "(void)0;",
      [LM], "no residual connection around attention"),
    m("lm-head-relu", "csrc/graph/lm.c",
      "lin(m, s->ws, &m->head[i], cur, 1, bufs[i & 1], BITNN_ACT_GELU, isa, pool)",
      "lin(m, s->ws, &m->head[i], cur, 1, bufs[i & 1], BITNN_ACT_RELU, isa, pool)",
      [LM], "the MLP head uses relu instead of gelu"),
    # ------------------------------------------------ sampler
    m("sampler-top-k-plus-one", "csrc/graph/sampler.c",
      "size_t k = p->top_k && p->top_k < V ? p->top_k : V;",
      "size_t k = p->top_k && p->top_k < V ? p->top_k + 1 : V;",
      [SAMPLER, GEN], "top_k samples from k + 1 tokens"),
    m("sampler-top-p-ignored", "csrc/graph/sampler.c",
      "if (p->top_p < 1.0f) {", "if (0) {",
      [SAMPLER, GEN], "top_p is ignored"),
    m("sampler-penalty-inverted", "csrc/graph/sampler.c",
      "work[t] = work[t] > 0 ? work[t] / p->repetition_penalty : work[t] * p->repetition_penalty;",
      "work[t] = work[t] > 0 ? work[t] * p->repetition_penalty : work[t] / p->repetition_penalty;",
      [SAMPLER, GEN], "the repetition penalty raises repeated tokens"),
    m("sampler-greedy-tie-last", "csrc/graph/sampler.c",
      "if (work[i] > work[best]) best = i;", "if (work[i] >= work[best]) best = i;",
      [SAMPLER, GEN], "greedy ties go to the larger id"),
    m("sampler-temperature-ignored", "csrc/graph/sampler.c",
      "const double inv_t = 1.0 / p->temperature;", "const double inv_t = 1.0;",
      [SAMPLER, GEN], "the temperature is ignored (always 1)"),
    m("sampler-nucleus-one-short", "csrc/graph/sampler.c",
      "if (cum >= p->top_p * total || want == k) {\n                n = i;",
      "if (cum >= p->top_p * total || want == k) {\n                n = i > 1 ? i - 1 : i;",
      [SAMPLER], "the nucleus drops its last token"),
    # ------------------------------------------------ generate(), slide
    m("slide-oldest-half", "bitnn/model.py",
      "keep = history[-(ctx // 2):]", "keep = history[:ctx // 2]",
      [SAMPLER, GEN], "the context slide keeps the oldest half"),
    m("slide-keeps-one-more", "bitnn/model.py",
      "keep = history[-(ctx // 2):]", "keep = history[-(ctx // 2 + 1):]",
      [SAMPLER, GEN], "the context slide keeps one token more than half"),
    m("prompt-truncation-oldest", "bitnn/model.py",
      'ids = ids[-ctx:] if context_overflow == "slide" else None',
      'ids = ids[:ctx] if context_overflow == "slide" else None',
      [SAMPLER, GEN], "a long prompt keeps its first tokens instead of its last"),
    m("penalty-window-empty", "bitnn/model.py",
      "nxt = sampler.sample(scores, history[-REPEAT_LAST_N:])", "nxt = sampler.sample(scores, [])",
      [SAMPLER, GEN], "generate() never passes recent tokens to the penalty"),
    m("classify-top-k-zero", "bitnn/model.py",
      'top_k = _check_int("top_k", top_k, 1)', 'top_k = _check_int("top_k", top_k, 0)',
      [RULES, CLS], "classify(top_k=0) is accepted"),
    m("preprocess-times-std", "bitnn/model.py",
      "(a.astype(np.float32) * np.float32(p[\"scale\"]) - mean) / std\n",
      "(a.astype(np.float32) * np.float32(p[\"scale\"]) - mean) * std\n",
      [CLS], "uint8 preprocessing multiplies by std instead of dividing"),
    # ------------------------------------------------ tokenizer
    m("bpe-heap-tie-break", "csrc/text/tokenizer.c",
      "if (p.rank < c.rank || (p.rank == c.rank && p.pos <= c.pos))",
      "if (p.rank < c.rank || (p.rank == c.rank && p.pos >= c.pos))",
      [TOK], "equal-rank BPE merges apply right to left"),
    m("bpe-rank-ignored", "csrc/text/tokenizer.c",
      "t->merges.rank[i] = (uint32_t)r;", "t->merges.rank[i] = 0;",
      [TOK], "all merges get the same rank"),
    # ------------------------------------------------ training layers, exporter
    m("quantize-greater-equal", "bitnn/nn.py",
      "return (p64 > p64.mean()).to(p.dtype)", "return (p64 >= p64.mean()).to(p.dtype)",
      [NN], "Eq. 1 with >= instead of >"),
    m("export-token-table-untransposed", "bitnn/exporter.py",
      "wt = np.ascontiguousarray(_bits_of(m.binary_weight()).T)  # (rows, emb_dim)",
      "wt = np.ascontiguousarray(_bits_of(m.binary_weight()).reshape(-1, c[\"emb_dim\"]))",
      [LM], "the embedding tables are written without the transpose"),
    m("export-conv-weight-layout", "bitnn/exporter.py",
      "wb = _bits_of(m.binary_weight()).transpose(0, 2, 3, 1)  # -> (Cout, kh, kw, Cin)",
      "wb = _bits_of(m.binary_weight()).transpose(0, 3, 2, 1)  # -> (Cout, kh, kw, Cin)",
      [CLS], "conv weights exported with kh and kw swapped"),
    # ------------------------------------------------ CLI
    m("cli-classify-top-k", "bitnn/cli.py",
      'top = model.classify(img, top_k=args.top_k, layout="NHWC",',
      'top = model.classify(img, top_k=5, layout="NHWC",',
      [CLS], "bitnn-run classify ignores -k"),
    m("cli-bad-image-status", "bitnn/cli.py",
      "                status = 1\n                continue", "                continue",
      [CLS], "bitnn-run classify exits 0 when an image cannot be read"),
    m("cli-generate-top-k", "bitnn/cli.py",
      "top_k=args.top_k, top_p=args.top_p,", "top_k=0, top_p=args.top_p,",
      [GEN], "bitnn-run ignores --top-k"),
    # ------------------------------------------------ image I/O
    m("grey-weights-swapped", "bitnn/imageio.py",
      "np.array([0.299, 0.587, 0.114], dtype=np.float32)",
      "np.array([0.114, 0.587, 0.299], dtype=np.float32)",
      [RULES, CLS], "RGB to grey with the red and blue weights swapped"),
    m("png-paeth-tie", "bitnn/imageio.py",
      "pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)",
      "pred = a if (pa < pb and pa <= pc) else (b if pb <= pc else c)",
      [IMAGES, CLS], "Paeth prefers b when pa == pb (equivalent: that tie means a == b or c wins)"),
    m("png-average-rounding", "bitnn/imageio.py",
      "cur[x] = (cur[x] + ((left + prev[x]) >> 1)) & 255",
      "cur[x] = (cur[x] + ((left + prev[x] + 1) >> 1)) & 255",
      [IMAGES, CLS], "the PNG Average filter rounds up"),
    m("resize-area-unnormalised", "bitnn/imageio.py",
      "weights /= weights.sum(axis=1, keepdims=True)", "pass",
      [IMAGES, CLS], "area-average shrinking sums instead of averaging"),
]

BUILT_SUFFIXES = (".c", ".h", ".pyx", ".pxi", ".pxd")


def tree_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (root / p).is_file()]


def copy_tree(src: Path, dst: Path) -> None:
    for rel in tree_files(src):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst / rel)


def env_for(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    if "CC" not in env and shutil.which("ccache"):
        env["CC"] = "ccache gcc" if shutil.which("gcc") else "ccache cc"
    return env


def build(tree: Path, timeout: float) -> tuple[bool, str]:
    try:
        p = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tree,
                           env=env_for(tree), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "build timed out"
    return p.returncode == 0, (p.stdout + p.stderr)[-2000:]


def run_tests(tree: Path, tests, timeout: float) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        p = subprocess.run(cmd, cwd=tree, env=env_for(tree), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"tests ran past {timeout:.0f} s"
    out = p.stdout + p.stderr
    failed = [ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return ("passed" if p.returncode == 0 else "failed"), (failed[0] if failed else out[-300:])


def run(mutants, tests_for, timeout, build_timeout, log) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bitnn-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        copy_tree(ROOT, tree)
        log(f"scratch copy: {tree}")
        ok, out = build(tree, build_timeout)
        if not ok:
            sys.exit(f"mutants: the unmutated tree does not build:\n{out}")
        baseline_so = {p: p.read_bytes() for p in (tree / "bitnn").glob("_core*.so")}
        union = sorted({t for mu in mutants for t in tests_for(mu)})
        log(f"baseline: {' '.join(union)}")
        status, detail = run_tests(tree, union, timeout * 4)
        if status != "passed":
            sys.exit(f"mutants: the tests fail without any mutant ({detail}); fix that first")
        for i, mu in enumerate(mutants, 1):
            path = tree / mu.file
            t0 = time.perf_counter()
            original = path.read_text() if path.exists() else None
            count = original.count(mu.old) if original is not None else 0
            rec = {"id": mu.id, "file": mu.file, "what": mu.what, "tests": list(tests_for(mu))}
            if count != 1:
                rec.update(status="not applicable",
                           detail=("snippet not found" if count == 0
                                   else f"snippet occurs {count} times"))
            else:
                path.write_text(original.replace(mu.old, mu.new))
                try:
                    needs_build = mu.file.endswith(BUILT_SUFFIXES)
                    built, out = build(tree, build_timeout) if needs_build else (True, "")
                    if not built:
                        rec.update(status="killed", detail="does not build: " + out.strip()[-200:])
                    else:
                        status, detail = run_tests(tree, tests_for(mu), timeout)
                        rec.update(status="survived" if status == "passed" else "killed",
                                   detail=detail)
                finally:
                    path.write_text(original)
                    if mu.file.endswith(BUILT_SUFFIXES):
                        for so, data in baseline_so.items():  # back to the unmutated build
                            so.write_bytes(data)
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(rec)
            log(f"[{i}/{len(mutants)}] {rec['status']:>14}  {mu.id}  ({rec['seconds']} s)  "
                f"{rec.get('detail', '')[:110]}")
    return results


def markdown(results) -> str:
    n = len(results)
    applicable = [r for r in results if r["status"] != "not applicable"]
    killed = sum(r["status"] == "killed" for r in applicable)
    lines = [f"{killed} of {len(applicable)} applicable mutants killed "
             f"({100.0 * killed / max(1, len(applicable)):.1f}%); "
             f"{n - len(applicable)} not applicable.",
             "", "| mutant | file | bug | result | caught by |", "|---|---|---|---|---|"]
    for r in results:
        by = r.get("detail", "")
        by = by.replace("|", "\\|").split(" - ")[0][:90] if r["status"] == "killed" else by[:60]
        lines.append(f"| `{r['id']}` | {r['file']} | {r['what']} | {r['status']} | {by} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    ap.add_argument("--suite", action="store_true", help="run the whole suite for every mutant")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per mutant's tests (300)")
    ap.add_argument("--build-timeout", type=float, default=600, help="seconds per rebuild (600)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the summary table here")
    args = ap.parse_args(argv)
    ids = [mu.id for mu in MUTANTS]
    if len(set(ids)) != len(ids):
        sys.exit("mutants: duplicate ids")
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(ids))
        if unknown:
            sys.exit(f"mutants: unknown ids {unknown}")
        mutants = [mu for mu in MUTANTS if mu.id in args.only]
    if args.list:
        for mu in mutants:
            print(f"{mu.id:40} {mu.file:22} {mu.what}")
        print(f"{len(mutants)} mutants")
        return 0

    # Ctrl-C or a kill: leave through the context managers (scratch copy removed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def tests_for(mu):
        return ("tests",) if args.suite else mu.tests

    t0 = time.perf_counter()
    results = run(mutants, tests_for, args.timeout, args.build_timeout,
                  lambda s: print(s, flush=True))
    table = markdown(results)
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
