"""Fusion boundaries for XLA: data materialised before and after a transpose.

XLA (CPU) fuses a gather or an elementwise op into a transpose next to it and then emits one untiled
loop over the output, several times slower than the transpose alone (B = 64: 5.6 ms against 1.1
for the gather and plain 2-D transpose of the correlation's spectra). XLA's own optimization barrier
is removed before fusion; a conditional whose predicate depends on data is a fusion boundary that XLA
keeps. Both branches of `barrier` are the identity, so the predicate (`token`) only hides the choice
from the compiler. Outside XLA every op is materialised anyway, and `barrier` costs a conditional.
"""
import tensorflow as tf


def token(x):
  """A boolean scalar read from one element of `x` (any dtype, any shape with an element or none)."""
  return tf.reduce_all(tf.math.is_finite(tf.math.real(tf.reshape(x, [-1])[:1])))


def barrier(x, predicate):
  """`x`, materialised: XLA fuses nothing across this point. `predicate`: a boolean from `token`.

  Take the predicate from data that is ready before `x` (an input of the computation): read from `x`
  itself, it made XLA compute `x` twice (B = 64: 2-3 ms more).
  """
  return tf.cond(predicate, lambda: tf.identity(x), lambda: tf.identity(x))


def transpose_2d(x, predicate):
  """`x [R, K]` -> `[K, R]` as a plain 2-D transpose of materialised data, between two barriers."""
  return barrier(tf.transpose(barrier(x, predicate)), predicate)
