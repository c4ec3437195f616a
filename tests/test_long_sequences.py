"""Long sequences (lesson 14): online-softmax attention in NumPy and chunked attention in
TensorFlow equal naive attention, with bounded memory."""

from __future__ import annotations

import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_lessons.attention import (
    causal_mask,
    online_softmax_attention,
    scaled_dot_product_attention,
)

# float32 (eps = 2^-23 ≈ 1.2e-7): outputs are softmax averages of N(0,1) values (|out| ≲ 4) over ≤ 12 keys (d ≤ 5);
# online/chunked paths scale q first and sum chunk by chunk, the naive one scales the scores: a few eps · 4 ≈ 1e-6;
# 1e-5 ≈ 84 eps. (With the 300x scores of the overflow test the weights are one-hot: both give the top key's v.)
TOL = 1e-5   # float32 agreement required by the course


def f32(*shape, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def qkv(batch=(2, 3), T=5, S=11, d=4, dv=3, seed=0):
    """float32 queries, keys and values with batch and head dimensions; T != S by default."""
    return f32(*batch, T, d, seed=seed), f32(*batch, S, d, seed=seed + 1, scale=2.0), f32(*batch, S, dv, seed=seed + 2)


def naive(q, k, v, mask=None, causal=False):
    """The package's naive attention; the causal mask ANDed into ``mask``."""
    if causal:
        cm = causal_mask(q.shape[-2], k.shape[-2])
        mask = cm if mask is None else np.logical_and(mask, cm)
    return scaled_dot_product_attention(q, k, v, mask)[0]


def random_mask(shape, seed, p=0.6):
    return np.random.default_rng(seed).random(shape) < p


# ------------------------------------------------------------------- NumPy online softmax


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 11, 16])   # S = 11: dividing, not dividing, S, > S
def test_online_softmax_equals_naive_attention_for_any_chunk_size(chunk_size, causal):
    q, k, v = qkv()
    got = online_softmax_attention(q, k, v, chunk_size, causal=causal)
    assert got.dtype == np.float32 and got.shape == (2, 3, 5, 3)
    np.testing.assert_allclose(got, naive(q, k, v, causal=causal), atol=TOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,S", [(5, 11), (11, 5), (8, 8)])
def test_online_softmax_with_a_mask_equals_naive_attention(T, S, causal):
    q, k, v = qkv(T=T, S=S, seed=3)
    mask = random_mask((2, 1, T, S), seed=4)            # one mask per example, shared by the heads
    got = online_softmax_attention(q, k, v, 3, mask=mask, causal=causal)
    np.testing.assert_allclose(got, naive(q, k, v, mask, causal), atol=TOL)


@pytest.mark.parametrize("query_chunk_size", [1, 2, 5, 6])
def test_online_softmax_in_query_blocks_equals_naive_attention(query_chunk_size):
    q, k, v = qkv(T=5, S=9, seed=5)
    mask = random_mask((2, 3, 5, 9), seed=6)
    got = online_softmax_attention(q, k, v, 4, mask=mask, causal=True, query_chunk_size=query_chunk_size)
    np.testing.assert_allclose(got, naive(q, k, v, mask, causal=True), atol=TOL)


def test_online_softmax_gives_zeros_to_fully_masked_rows():
    q, k, v = qkv(T=4, S=6, seed=7)
    mask = np.ones((4, 6), bool)
    mask[1] = False                                     # query 1 sees nothing
    mask[2, :3] = False                                 # query 2 sees only the second chunk
    got = online_softmax_attention(q, k, v, 3, mask=mask)
    assert np.isfinite(got).all()
    assert (got[..., 1, :] == 0).all()
    np.testing.assert_allclose(got, naive(q, k, v, mask), atol=TOL)


def test_online_softmax_broadcasts_leading_dimensions_like_the_naive_version():
    q = f32(2, 1, 5, 4, seed=8)                         # (batch, 1, T, d)
    k, v = f32(3, 7, 4, seed=9), f32(3, 7, 2, seed=10)  # (heads, S, d): shared by the batch
    mask = random_mask((4, 1, 1, 5, 7), seed=11)        # adds a leading dimension
    got = online_softmax_attention(q, k, v, 3, mask=mask)
    assert got.shape == (4, 2, 3, 5, 2)
    np.testing.assert_allclose(got, naive(q, k, v, mask), atol=TOL)


def test_online_softmax_with_no_keys_or_no_queries_returns_zeros_of_the_right_shape():
    q, k, v = qkv(T=3, S=4, seed=25)
    no_keys = online_softmax_attention(q, k[..., :0, :], v[..., :0, :], 2)
    assert no_keys.shape == (2, 3, 3, 3) and (no_keys == 0).all()
    assert online_softmax_attention(q[..., :0, :], k, v, 2).shape == (2, 3, 0, 3)


def test_online_softmax_does_not_overflow_on_huge_scores():
    q, k, v = qkv(T=3, S=10, seed=12)
    got = online_softmax_attention(q * 300, k * 300, v, 4)   # scores of order 1e5: e^s overflows
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, naive(q * 300, k * 300, v), atol=TOL)


@pytest.mark.parametrize("dtype,work", [(np.float16, np.float32), (np.float32, np.float32), (np.float64, np.float64)])
def test_online_softmax_returns_the_query_dtype(dtype, work):
    q, k, v = (x.astype(dtype) for x in qkv(T=3, S=5, seed=13))
    got = online_softmax_attention(q, k, v, 2)
    assert got.dtype == dtype
    ref = scaled_dot_product_attention(q.astype(work), k.astype(work), v.astype(work))[0]
    np.testing.assert_allclose(got, ref.astype(dtype), atol=1e-3 if dtype == np.float16 else 1e-6)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 9), S=st.integers(1, 12), d=st.integers(1, 5), chunk=st.integers(1, 14),
       query_chunk=st.one_of(st.none(), st.integers(1, 10)), causal=st.booleans(),
       masked=st.booleans(), seed=st.integers(0, 2**16))
def test_property_online_softmax_equals_naive_attention(T, S, d, chunk, query_chunk, causal, masked, seed):
    q, k, v = f32(2, T, d, seed=seed), f32(2, S, d, seed=seed + 1, scale=3.0), f32(2, S, 3, seed=seed + 2)
    mask = random_mask((2, T, S), seed + 3, p=0.5) if masked else None
    got = online_softmax_attention(q, k, v, chunk, mask=mask, causal=causal, query_chunk_size=query_chunk)
    np.testing.assert_allclose(got, naive(q, k, v, mask, causal), atol=TOL)


@pytest.mark.parametrize("change,name", [
    (dict(chunk_size=0), "`chunk_size`"),
    (dict(chunk_size=-2), "`chunk_size`"),
    (dict(chunk_size=2.5), "`chunk_size`"),
    (dict(chunk_size=True), "`chunk_size`"),
    (dict(query_chunk_size=0), "`query_chunk_size`"),
    (dict(causal="yes"), "`causal`"),
    (dict(k=np.zeros((6, 3))), r"`q` has shape \(4, 2\) and `k` has shape \(6, 3\)"),
    (dict(v=np.zeros((5, 2))), r"`k` has shape \(6, 2\) and `v` has shape \(5, 2\)"),
    (dict(mask=np.ones((4, 5), bool)), r"`mask` has shape \(4, 5\)"),
    (dict(mask=np.ones((4, 6))), "`mask` must be boolean"),
    (dict(q=np.zeros(2)), "`q` must have shape"),
])
def test_online_softmax_rejects_bad_arguments_naming_them(change, name):
    args = dict(q=np.zeros((4, 2)), k=np.zeros((6, 2)), v=np.zeros((6, 2)), chunk_size=2) | change
    with pytest.raises(ValueError, match=name):
        online_softmax_attention(**args)


def _peak_mib(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_online_softmax_peak_memory_is_far_below_the_score_matrix():
    n, d = 4096, 16                                     # one (n, n) float32 matrix = 64 MiB
    q, k, v = f32(n, d, seed=14), f32(n, d, seed=15), f32(n, d, seed=16)
    online = _peak_mib(lambda: online_softmax_attention(q, k, v, 256))
    naive_peak = _peak_mib(lambda: scaled_dot_product_attention(q, k, v))
    assert online < 16, f"online softmax peaked at {online:.1f} MiB"
    assert naive_peak > 64, f"naive attention peaked at only {naive_peak:.1f} MiB"


def test_attention_module_does_not_import_tensorflow():
    code = ("import sys, attention_lessons.attention; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"attention_lessons.attention imports {done.stdout.strip()}"


# ------------------------------------------------------------- TensorFlow chunked attention


@pytest.fixture(scope="module")
def tf():
    from attention_lessons.device import import_tensorflow
    return import_tensorflow()


@pytest.fixture(scope="module")
def chunked_attention(tf):
    from attention_lessons.layers import chunked_attention
    return chunked_attention


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 11, 16])
def test_tf_chunked_attention_equals_naive_attention_eagerly(chunked_attention, chunk_size, causal):
    q, k, v = qkv()
    got = chunked_attention(q, k, v, chunk_size, causal=causal)
    assert got.dtype.name == "float32" and tuple(got.shape) == (2, 3, 5, 3)
    np.testing.assert_allclose(got.numpy(), naive(q, k, v, causal=causal), atol=TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_tf_chunked_attention_equals_naive_attention_in_tf_function(tf, chunked_attention, causal):
    # Unknown lengths in the signature: one trace serves every T and S.
    spec = tf.TensorSpec([2, 3, None, 4], tf.float32)
    fn = tf.function(lambda q, k, v, m: chunked_attention(q, k, v, 3, causal=causal, mask=m, query_chunk_size=2),
                     input_signature=[spec, spec, tf.TensorSpec([2, 3, None, 3]), tf.TensorSpec([2, 1, None, None], tf.bool)])
    for T, S in [(5, 11), (11, 5)]:
        q, k, v = qkv(T=T, S=S, seed=17)
        mask = random_mask((2, 1, T, S), seed=18)
        np.testing.assert_allclose(fn(q, k, v, mask).numpy(), naive(q, k, v, mask, causal), atol=TOL)
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("mask_shape", [(2, 1, 5, 9), (2, 1, 1, 9), (5, 9), (9,)])
def test_tf_chunked_attention_with_masks_and_query_blocks_equals_naive(chunked_attention, mask_shape):
    q, k, v = qkv(T=5, S=9, seed=19)
    mask = random_mask(mask_shape, seed=20)
    mask[..., 0] = False
    if len(mask_shape) == 4:
        mask[0, 0, 0] = False                             # a fully masked query row
    got = chunked_attention(q, k, v, 4, causal=True, mask=mask, query_chunk_size=2)
    assert np.isfinite(got.numpy()).all()
    np.testing.assert_allclose(got.numpy(), naive(q, k, v, mask, causal=True), atol=TOL)


@pytest.mark.parametrize("query_chunk_size", [None, 2])
def test_tf_chunked_attention_broadcasts_leading_dimensions_like_the_naive_version(chunked_attention, query_chunk_size):
    q = f32(2, 3, 5, 4, seed=26)                        # (batch, heads, T, d)
    k, v = f32(3, 9, 4, seed=27), f32(3, 9, 3, seed=28) # (heads, S, d): shared by the batch
    mask = random_mask((4, 2, 1, 5, 9), seed=29)        # adds a leading dimension
    got = chunked_attention(q, k, v, 4, mask=mask, causal=True, query_chunk_size=query_chunk_size)
    assert tuple(got.shape) == (4, 2, 3, 5, 3)
    np.testing.assert_allclose(got.numpy(), naive(q, k, v, mask, causal=True), atol=TOL)


def test_tf_chunked_attention_gives_zeros_to_fully_masked_rows(chunked_attention):
    q, k, v = qkv(T=4, S=6, seed=21)
    mask = np.ones((4, 6), bool)
    mask[1] = False
    got = chunked_attention(q, k, v, 4, mask=mask).numpy()
    assert (got[..., 1, :] == 0).all()
    np.testing.assert_allclose(got, naive(q, k, v, mask), atol=TOL)


def test_tf_chunked_attention_gradients_equal_those_of_naive_tf_attention(tf, chunked_attention):
    q, k, v = (tf.Variable(x) for x in qkv(T=6, S=7, seed=22))
    mask = random_mask((2, 1, 6, 7), seed=23)
    mask[0, 0, 2] = False                                 # a fully masked row: no NaN in the gradients

    def naive_tf():
        s = tf.matmul(q, k, transpose_b=True) / math.sqrt(4)
        visible = np.logical_and(mask, causal_mask(6, 7))
        w = tf.where(visible, tf.nn.softmax(tf.where(visible, s, -1e30)), 0.0)
        return tf.matmul(w, v)

    grads = []
    for fn in (lambda: chunked_attention(q, k, v, 3, causal=True, mask=mask), naive_tf):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(fn()))          # a non-trivial upstream gradient
        grads.append([g.numpy() for g in tape.gradient(loss, [q, k, v])])
    for got, want, name in zip(*grads, "qkv"):
        assert np.isfinite(got).all(), name
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"gradient w.r.t. {name}")


def test_tf_chunked_attention_keeps_the_input_dtype_with_float32_statistics(tf, chunked_attention):
    # Scores of 80 000 overflow float16 (max 65 504); in float32 they are harmless.
    q = np.full((1, 3, 4), 200.0, np.float16)
    k = np.full((1, 5, 4), 200.0, np.float16)
    v = f32(1, 5, 2, seed=24).astype(np.float16)
    got = chunked_attention(q, k, v, 2)
    assert got.dtype == tf.float16 and np.isfinite(got.numpy()).all()
    want = naive(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    np.testing.assert_allclose(got.numpy().astype(np.float32), want, atol=1e-3)


@pytest.mark.parametrize("change,name", [
    (dict(chunk_size=0), "`chunk_size`"),
    (dict(chunk_size=2.5), "`chunk_size`"),
    (dict(query_chunk_size=-1), "`query_chunk_size`"),
    (dict(causal=1), "`causal`"),
    (dict(key=np.zeros((6, 3), np.float32)), "`query` has shape .* and `key` has shape"),
    (dict(value=np.zeros((5, 2), np.float32)), "`key` has shape .* and `value` has shape"),
    (dict(mask=np.ones((3, 6), bool)), "`mask` has shape"),
    (dict(mask=np.ones((4, 6), np.float32)), "`mask` must be boolean"),
    (dict(query=np.zeros((4, 2), np.int32)), "`query` must be floating point"),
    (dict(query=np.zeros((2,), np.float32)), "`query` must have shape"),
    (dict(key=np.zeros((3, 6, 2), np.float32), value=np.zeros((3, 6, 2), np.float32),
          query=np.zeros((2, 4, 2), np.float32)), "leading"),
])
def test_tf_chunked_attention_rejects_bad_arguments_naming_them(chunked_attention, change, name):
    args = dict(query=np.zeros((4, 2), np.float32), key=np.zeros((6, 2), np.float32),
                value=np.zeros((6, 2), np.float32), chunk_size=2) | change
    with pytest.raises(ValueError, match=name):
        chunked_attention(**args)


# ------------------------------------------- peak memory of one call, in a fresh process (lesson 14)


def test_peak_rss_in_a_fresh_process_sees_a_known_allocation_even_from_a_large_parent():
    from attention_lessons.memory import allocation_workload, peak_rss_in_fresh_process
    ballast = np.ones(300 * 2**20, np.uint8)            # a large parent: Linux would pass its peak to a direct child
    got = peak_rss_in_fresh_process(allocation_workload, 64 * 2**20)
    del ballast
    if got is None:
        pytest.skip("this operating system reports no peak resident memory")
    assert 64 * 2**20 <= got < 72 * 2**20, got / 2**20


def test_fresh_processes_see_naive_attention_hold_its_scores_and_chunked_attention_not():
    from attention_lessons.memory import attention_workload, peak_rss_in_fresh_processes
    scores = 4 * 4096 * 4096 * 4                         # (1, 4, 4096, 4096) float32 = 256 MiB
    naive_rss, chunked_rss = peak_rss_in_fresh_processes(attention_workload, [
        dict(impl="naive", n=4096, heads=4),
        dict(impl="chunked", n=4096, heads=4, chunk_size=256, query_chunk_size=512)])   # 2 MiB tiles
    if naive_rss is None:
        pytest.skip("this operating system reports no peak resident memory")
    # Wide margins: resident memory depends on kernels, threads and the TensorFlow version. Measured:
    # naive ~272 MiB everywhere; chunked 20-32 MiB with oneDNN, 28-30 MiB with TensorFlow's Eigen kernels
    # (TF_ENABLE_ONEDNN_OPTS=0), where 16 MiB tiles without query blocks took 69-81 MiB. A process that
    # held the scores would add at least 256 MiB; half of that is the bound.
    assert naive_rss > 0.9 * scores, f"naive attention added only {naive_rss / 2**20:.1f} MiB"
    assert chunked_rss < scores / 2, f"chunked attention added {chunked_rss / 2**20:.1f} MiB"


def test_peak_rss_in_fresh_process_reports_the_childs_error():
    from attention_lessons.memory import attention_workload, peak_rss_in_fresh_process
    with pytest.raises(RuntimeError, match="`impl` must be"):
        peak_rss_in_fresh_process(attention_workload, "bogus", 8)


def test_peak_rss_in_fresh_process_needs_a_function_it_can_import():
    from attention_lessons.memory import peak_rss_in_fresh_process
    with pytest.raises(ValueError, match="import by name"):
        peak_rss_in_fresh_process(lambda: (lambda: None))


def test_peak_rss_in_fresh_process_kills_the_child_on_timeout():
    from attention_lessons.memory import attention_workload, peak_rss_in_fresh_process
    with pytest.raises(subprocess.TimeoutExpired):
        peak_rss_in_fresh_process(attention_workload, "naive", 8, timeout=0.5)   # TensorFlow's import alone is longer


@pytest.mark.parametrize("impl", ["naive", "chunked"])
def test_attention_workload_computes_attention(tf, impl):
    from attention_lessons.memory import attention_workload
    run = attention_workload(impl, 40, batch=2, heads=3, head_dim=8, chunk_size=16, query_chunk_size=8, seed=5)
    got = run()
    q, k, v = (x.numpy() for x in run.inputs)
    assert got.shape == (2, 3, 40, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, naive(q, k, v), atol=TOL)
    assert run.function.experimental_get_tracing_count() == 1, "traced once, before the measured call"


def test_attention_workload_runs_the_course_layer(tf):
    from attention_lessons.memory import attention_workload
    run = attention_workload("layer", 12, batch=2, heads=4, head_dim=8)
    (x,) = run.inputs
    assert tuple(x.shape) == (2, 12, 32) and run().shape == (2, 12, 32)
