"""Grids on the sphere and on SO(3), and rotation helpers shared by every stage.

Conventions (docs/conventions.md): points `x(beta, alpha)`, Driscoll-Healy grids, ZYZ Euler
angles, matrices acting on column vectors.
"""
from geometry.grids import (area_weights, quadrature_weights, so3_grid, sphere_directions,
                            sphere_grid)
from geometry.rotations import (angular_distance, euler_zyz_to_matrix, matrix_to_euler_zyz,
                                quaternion_to_matrix, random_rotations, rotation_y, rotation_z)

__all__ = [
    'area_weights', 'quadrature_weights', 'so3_grid', 'sphere_directions', 'sphere_grid',
    'angular_distance', 'euler_zyz_to_matrix', 'matrix_to_euler_zyz', 'quaternion_to_matrix',
    'random_rotations', 'rotation_y', 'rotation_z',
]
