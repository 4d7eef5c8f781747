"""Meshes, their spherical maps and rendered views: the data side of the project.

Conventions: docs/conventions.md. Meshes are normalised once (`load_mesh`, `normalize_mesh`),
then rotated by ray casting (`MeshRaycaster`, `mesh_to_sphere`, `render_view`).
"""
from datasets.meshes import SUPPORTED_SUFFIXES, load_mesh, normalize_mesh, read_off
from datasets.raycast import (CAMERA_DISTANCE, FIELD_OF_VIEW_DEG, SPHERE_CHANNELS, MeshRaycaster,
                              camera_rays, mesh_to_sphere, project_points, render_view,
                              sphere_rays)
from geometry.rotations import random_rotations
from datasets.procedural import CATEGORIES, generate_shape
from datasets.builders import EquivariantShapes, load_split, make_builder
