"""serving.op_flops: FLOPs of the matrix products a call ran, from a profiler trace."""

import pytest
import tensorflow as tf

from serving import op_flops


def test_parse_shapes_reads_the_trace_stat():
    assert op_flops.parse_shapes("(float[200,48];float[48,64];float[64])") == (
        (200, 48), (48, 64), (64,))
    assert op_flops.parse_shapes("(float[];int64[3])") == ((), (3,))


@pytest.mark.parametrize("a,b,expected", [
    ((8, 16), (16, 4), 2 * 8 * 16 * 4),          # a · b
    ((8, 16), (5, 16), 2 * 8 * 16 * 5),          # a · bᵀ
    ((16, 8), (16, 4), 2 * 8 * 16 * 4),          # aᵀ · b
    ((3, 8, 16), (16, 4), 2 * 3 * 8 * 16 * 4),   # batched, b broadcast
    ((4, 1, 32), (4, 32, 48), 2 * 4 * 32 * 48),  # one batch a head
    ((2, 1, 8, 16), (3, 16, 4), 2 * 6 * 8 * 16 * 4),  # batch dims broadcast
])
def test_matmul_flops_every_orientation(a, b, expected):
    assert op_flops.matmul_flops(a, b) == expected


def test_matmul_flops_refuses_operands_that_do_not_multiply():
    with pytest.raises(ValueError, match="no orientation"):
        op_flops.matmul_flops((8, 16), (7, 5))
    with pytest.raises(ValueError, match="rank >= 2"):
        op_flops.matmul_flops((8,), (8, 2))


def test_einsum_flops_is_twice_the_product_of_the_index_sizes():
    assert op_flops.einsum_flops("bd,dhk->bhk", [(8, 16), (16, 2, 3)]) == 2 * 8 * 16 * 6
    assert op_flops.einsum_flops("aecd,abcd->acbe", [(1, 16, 4, 32), (1, 16, 4, 32)]) \
        == 2 * 16 * 4 * 32 * 16
    with pytest.raises(ValueError, match="does not fit"):
        op_flops.einsum_flops("bd,dk->bk", [(8, 16, 1), (16, 4)])


def test_a_traced_call_counts_each_product_it_ran():
    """Products of known sizes, some with transposes grappler folds into them and an
    einsum: the count equals the sum written out by hand."""
    a = tf.random.normal([8, 16])
    w = tf.random.normal([16, 4])
    b = tf.random.normal([5, 16])
    batch = tf.random.normal([3, 8, 16])
    heads = tf.random.normal([16, 2, 3])

    @tf.function
    def f(a, w, b, batch, heads):
        return (tf.reduce_sum(tf.matmul(a, w))
                + tf.reduce_sum(tf.matmul(a, tf.transpose(b)))
                + tf.reduce_sum(tf.matmul(batch, w))
                + tf.reduce_sum(tf.einsum("bd,dhk->bhk", a, heads)))

    args = (a, w, b, batch, heads)
    graph = f.get_concrete_function(*args).graph.as_graph_def()
    expected = (2 * 8 * 16 * 4) + (2 * 8 * 16 * 5) + (2 * 3 * 8 * 16 * 4) \
        + (2 * 8 * 16 * 6)
    assert op_flops.call_flops(lambda: f(*args), graph) == expected


def test_an_einsum_without_its_equation_is_an_error():
    ops = [op_flops.TracedOp("f/einsum/Einsum", "Einsum", ((8, 16), (16, 4)))]
    with pytest.raises(ValueError, match="no equations"):
        op_flops.count_flops(ops, {})
    assert op_flops.count_flops(ops, {"einsum/Einsum": "bd,dk->bk"}) == 2 * 8 * 16 * 4
