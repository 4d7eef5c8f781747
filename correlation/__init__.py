"""Native TensorFlow spherical harmonics, Wigner-d functions and SO(3) correlation.

- `correlation.sht.forward / inverse`: spherical harmonic transform of real maps `[..., 2B, 2B, C]`.
- `correlation.rotate(f, R)`: `R . f`, exact for band-limited maps.
- `correlation.correlate(f, g)`: SO(3) correlation volume on the SOFT grid.
- `correlation.align(f, g)`, `correlation.align_top_k(f, g)`: relative rotation `R` with `g ~= R . f`.
- `correlation.enable_compilation_cache()`: compiled steps kept on disk for the next process.
Conventions: docs/conventions.md and the module docstrings.
"""
from correlation import alignment
from correlation import rotation
from correlation import sht
from correlation import so3
from correlation import wigner
from correlation.alignment import align, align_top_k
from correlation.rotation import rotate
from correlation.so3 import correlate
from correlation.so3 import enable_compilation_cache

__all__ = ['alignment', 'rotation', 'sht', 'so3', 'wigner', 'rotate', 'correlate', 'align', 'align_top_k',
           'enable_compilation_cache']
