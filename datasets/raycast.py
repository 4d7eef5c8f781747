"""Ray casting of normalised meshes: spherical maps on the Driscoll-Healy grid and camera views.

Both outputs describe `R . mesh` (the mesh rotated by `R` about the origin). The mesh is never
rotated: since `sphere(R . mesh)(x) = sphere(mesh)(R^T x)`, and a camera ray `o + t d` hits
`R . mesh` where the ray `R^T o + t R^T d` hits `mesh`, we rotate the rays by `R^T` into the mesh
frame and keep one acceleration structure per mesh. All rotations of a batch go through one
intersection call.

Spherical map (`MeshRaycaster.spheres`, `mesh_to_sphere`), for each grid direction `x`
(`geometry.sphere_directions`): a ray starts just outside the unit sphere, at `(1 + eps) x`, and
runs towards the origin and on through it, along `-x`. With `t` the distance from its start to the
first hit,
  - 'depth' = `(t - eps) / 2`: the distance travelled inside the unit ball, over 2, the longest
    path through it; in [0, 1], and 1 where the ray hits nothing;
  - 'cos' = `|cos|` of the angle between the ray and the surface normal at the hit, 0 for no hit
    (and for a degenerate face, which has no normal). The absolute value makes it independent of
    face orientation, which CAD soup does not keep consistent.
Channels 'convex_hull_depth' and 'convex_hull_cos' are the same against the mesh's convex hull.
Channels 0 and 1 are always 'depth' and 'cos'; `extra_channels` follow in the order given.

Anti-aliasing (`oversample=k > 1`): point samples of these maps are far from band-limited (a
silhouette is a jump), so at k = 1 their degrees >= B alias, and `sphere(R . mesh)` differs from
`correlation.rotate(sphere(mesh), R)` (exact only for band-limited maps) well beyond rounding
(numbers below). With k > 1 the rays are cast on the Driscoll-Healy grid of bandwidth kB and the map is
low-passed to bandwidth B with the spherical harmonic transform (`correlation.sht`: forward on
the fine grid, keep degrees l < B, inverse on the B grid; the two grids share no sample, which
the transform does not need). The result is exactly band-limited, so rotating it is exact and
the aliasing error is what the fine grid leaves. Each channel is then the degree < B part of
the quantity above: a smooth average near silhouettes and edges, not a single ray's value, and
it rings there (Gibbs), leaving [0, 1] by up to about 0.1 (0.2 next to thin parts). It is not
clipped back: clipping hardly changes the equivariance error but breaks the band limit it was
made for (the round trip through the SHT then moves values by 2-7e-2 instead of 1e-6).
Measured at B = 32 (area-weighted relative L2 of `sphere(R . mesh)` against
`correlation.rotate(sphere(mesh), R)`, 3 procedural and 2 PSB shapes): 0.05-0.16 at k = 1,
0.015-0.037 at k = 2, 0.006-0.016 at k = 4; per channel with each map's mean removed (a bench
and a PSB human): 0.24-0.46, 0.05-0.11, 0.02-0.05. The SHT runs in float32 (float64 differs by
< 1e-6).

View (`MeshRaycaster.views`, `render_view`): a pinhole camera at `(0, 0, CAMERA_DISTANCE)` looks
at the origin along -z, image up = +y, image right = +x, row 0 = top; each pixel's ray goes
through the pixel's centre. With `CAMERA_DISTANCE = 3` the unit sphere subtends a half-angle of
asin(1/3) = 19.47 degrees, and the field of view `FIELD_OF_VIEW_DEG = 40` fits it with a margin
of 3% of the half-width. The light is a point light at the camera, so the shading of a hit is
`AMBIENT + (1 - AMBIENT) |cos|` (Lambertian, two-sided, with ambient), dimmed with distance
(depth cueing) by the factor `1 - DEPTH_CUE (distance - (CAMERA_DISTANCE - 1)) / 2`, from 1 at the
unit sphere's nearest point to `1 - DEPTH_CUE` at its farthest (`shade`); background pixels are 0.
Why the depth cue: with a headlight, |cos| shading is nearly the same for a shape and its mirror
image through the plane z = 0 (perspective is the only difference), so a view hardly tells the
front of a mirror-symmetric shape from its back, and a student that maps views to spherical
embeddings cannot learn their odd degrees (the part that tells a pose from its 180-degree flips).
Measured with students on the default preset's data: the depth cue doubled the correlation of the
predicted degree-1 harmonics with the teacher's (0.156 vs 0.087 after 6000 steps).
The view depth is the Euclidean distance from the camera centre to the hit (in [2, 4] for a
normalised mesh), 0 on the background.

`eps` is `RAY_START_OFFSET` = 1e-3. The mesh must be normalised (`datasets.normalize_mesh`): the
ray caster refuses a mesh that leaves the unit ball.

Engines: 'embree' (embreex, float32, fast; `num_threads` > 1 traces a batch on several cores) and
'trimesh' (trimesh.ray.ray_triangle with its R-tree from the `rtree` package, float64; slow, about
1 map per second on a 2k-face mesh and far less on 10k faces: for tests, or where embreex is
missing). They agree to float32 rounding. 'auto' picks embree when it imports.
"""
from concurrent import futures
import functools

import numpy as np
import tensorflow as tf
import trimesh
from scipy import spatial

from correlation import sht
from geometry import grids

try:
  from embreex import mesh_construction as _embree_mesh
  from embreex import rtcore_scene as _embree_scene
  HAVE_EMBREE = True
except ImportError:  # the trimesh engine still works
  HAVE_EMBREE = False

ENGINES = ('auto', 'embree', 'trimesh')

# Rays start this far outside the unit sphere, so a vertex at radius 1 is never behind the start.
RAY_START_OFFSET = 1e-3
# A mesh given to the ray caster must lie in the unit ball up to this tolerance (normalize_mesh).
_UNIT_BALL_TOLERANCE = 1e-4

CAMERA_DISTANCE = 3.0
FIELD_OF_VIEW_DEG = 40.0
AMBIENT = 0.2
DEPTH_CUE = 0.6

BASE_SPHERE_CHANNELS = ('depth', 'cos')
# channel name -> (surface it is cast against, quantity)
SPHERE_CHANNELS = {
    'depth': ('mesh', 'depth'),
    'cos': ('mesh', 'cos'),
    'convex_hull_depth': ('hull', 'depth'),
    'convex_hull_cos': ('hull', 'cos'),
}


# ----------------------------------------------------------------------------------------------
# Ray tables, cached per bandwidth / image size (in the mesh-independent world frame).


@functools.lru_cache(maxsize=None)
def sphere_rays(bandwidth):
  """Unit directions `x` of the grid, float64 `[2B * 2B, 3]` in row-major (beta, alpha) order.

  The ray of grid point `x` starts at `(1 + RAY_START_OFFSET) x` with direction `-x`.
  """
  rays = np.array(grids.sphere_directions(bandwidth), dtype=np.float64).reshape(-1, 3)
  rays.flags.writeable = False
  return rays


@functools.lru_cache(maxsize=None)
def camera_rays(size):
  """Unit directions of the camera's pixel rays, float64 `[size * size, 3]`, row-major pixels.

  Pixel (row r, column c) looks through the image-plane point at depth -1 (the camera looks
  along -z) with `u = (2 (c + 0.5) / size - 1) tan(fov / 2)` (right = +x) and
  `v = (1 - 2 (r + 0.5) / size) tan(fov / 2)` (up = +y). All rays start at `camera_position()`.
  """
  if int(size) != size or size < 1:
    raise ValueError(f'image size must be a positive integer, got {size!r}')
  size = int(size)
  half_width = np.tan(np.radians(FIELD_OF_VIEW_DEG) / 2)
  centres = (np.arange(size) + 0.5) / size * 2 - 1
  v, u = np.meshgrid(-centres * half_width, centres * half_width, indexing='ij')
  rays = np.stack([u, v, -np.ones_like(u)], axis=-1).reshape(-1, 3)
  rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
  rays.flags.writeable = False
  return rays


def camera_position():
  """The camera centre, float64 `[3]`: on the +z axis at `CAMERA_DISTANCE`."""
  return np.array([0.0, 0.0, CAMERA_DISTANCE])


def project_points(points, size):
  """Pixel coordinates of world points seen by the camera (the inverse of `camera_rays`).

  Args:
    points: `[N, 3]` in front of the camera (z < CAMERA_DISTANCE).
    size: image size in pixels.

  Returns:
    float64 `[N, 2]` (row, column), continuous: pixel (r, c) has its centre at (r, c).
  """
  points = np.asarray(points, dtype=np.float64)
  half_width = np.tan(np.radians(FIELD_OF_VIEW_DEG) / 2)
  depth = CAMERA_DISTANCE - points[:, 2]
  u = points[:, 0] / depth / half_width
  v = points[:, 1] / depth / half_width
  return np.stack([(1 - v) * size / 2 - 0.5, (u + 1) * size / 2 - 0.5], axis=-1)


# ----------------------------------------------------------------------------------------------
# Engines: first hit of each ray. Both return (distance [N] float64 with inf for a miss,
# face index [N] int64 with -1 for a miss) for unit directions.


class _EmbreeEngine:
  """Embree BVH built once; float32 (fine: the mesh is in the unit ball)."""

  # Bounds the temporary arrays of a large batch (about 100 MB).
  max_rays_per_call = 1 << 21
  # embreex releases the GIL while it traces, so threads run on separate cores.
  parallel = True

  def __init__(self, vertices, faces):
    self._scene = _embree_scene.EmbreeScene()
    # The scene keeps the geometry alive; the returned handle is not needed.
    _embree_mesh.TriangleMesh(scene=self._scene, vertices=vertices.astype(np.float32),
                              indices=faces.astype(np.int32))
    # Embree builds the BVH on the first query: do it now, so that threads never race to build.
    self._scene.run(np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32))

  def first_hits(self, origins, directions):
    # output=1 returns embree's own hit distance `tfar`, no plane-line intersection needed.
    result = self._scene.run(origins.astype(np.float32), directions.astype(np.float32), output=1)
    face = result['primID'].astype(np.int64)
    distance = np.where(face >= 0, result['tfar'].astype(np.float64), np.inf)
    return distance, face


class _TrimeshEngine:
  """trimesh.ray.ray_triangle: pure numpy plus an R-tree of triangles, float64."""

  # Each ray brings every triangle whose box meets the ray's box (thousands for a ray through a
  # 10k-face mesh); small calls keep that candidate table to some hundred MB.
  max_rays_per_call = 256
  parallel = False  # mostly Python and numpy under the GIL

  def __init__(self, vertices, faces):
    try:
      import rtree  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as e:
      raise ValueError("engine='trimesh' needs the rtree package (pip install rtree)") from e
    from trimesh.ray import ray_triangle  # pylint: disable=import-outside-toplevel
    self._intersector = ray_triangle.RayMeshIntersector(
        trimesh.Trimesh(vertices, faces, process=False))

  def first_hits(self, origins, directions):
    locations, ray, face = self._intersector.intersects_location(
        origins, directions, multiple_hits=False)
    locations = np.reshape(locations, (-1, 3))  # trimesh returns shape (0,) when nothing is hit
    distance = np.full(len(origins), np.inf)
    first_face = np.full(len(origins), -1, dtype=np.int64)
    distance[ray] = np.einsum('ij,ij->i', locations - origins[ray], directions[ray])
    first_face[ray] = face
    return distance, first_face


def _make_engine(vertices, faces, engine):
  if engine not in ENGINES:
    raise ValueError(f'engine must be one of {ENGINES}, got {engine!r}')
  if engine == 'embree' and not HAVE_EMBREE:
    raise ValueError("engine='embree' needs the embreex package (pip install embreex)")
  if engine == 'embree' or (engine == 'auto' and HAVE_EMBREE):
    return _EmbreeEngine(vertices, faces)
  return _TrimeshEngine(vertices, faces)


def unit_face_normals(vertices, faces):
  """Unit normals `[F, 3]` of triangles; exactly 0 for degenerate (zero-area) faces, never NaN."""
  triangles = vertices[faces]
  normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
  norms = np.linalg.norm(normals, axis=-1, keepdims=True)
  return np.divide(normals, norms, out=np.zeros_like(normals), where=norms > 1e-300)


def _convex_hull(vertices):
  """Convex hull of points `[N, 3]` as (vertices, faces `[H, 3]`), triangles in any orientation.

  Orientation does not matter to the ray caster (it uses |cos|). qhull rejects flat (coplanar)
  input; its joggle option 'QJ' then gives the flat hull as a thin closed surface.
  """
  try:
    hull = spatial.ConvexHull(vertices, qhull_options='Qt')
  except spatial.QhullError:
    hull = spatial.ConvexHull(vertices, qhull_options='QJ')
  return vertices, np.asarray(hull.simplices, np.int64)


def low_pass(maps, bandwidth):
  """Band-limits maps to degrees l < `bandwidth` and resamples them on that grid.

  Args:
    maps: `[V, 2K, 2K, C]` on the Driscoll-Healy grid of bandwidth K >= `bandwidth`.
    bandwidth: B.

  Returns:
    float32 `[V, 2B, 2B, C]`: the degree < B part of each map (its orthogonal projection),
    sampled on the grid of bandwidth B. One batched SHT for all maps, in float32 (float64 changes
    the result by about 1e-6 of its range).
  """
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 4 or maps.shape[1] != maps.shape[2] or maps.shape[1] < 2 * bandwidth:
    raise ValueError(f'low_pass: expected maps [V, 2K, 2K, C] with K >= bandwidth {bandwidth}, '
                     f'got shape {maps.shape}')
  coefficients = sht.forward(tf.constant(maps))[:, :bandwidth, :bandwidth, :]
  return sht.inverse(coefficients).numpy()


def _as_rotations(rotations, name='rotations'):
  """Validates a batch of rotations `[V, 3, 3]` and returns it as float64."""
  r = np.asarray(rotations, dtype=np.float64)
  if r.ndim != 3 or r.shape[1:] != (3, 3):
    raise ValueError(f'{name} must have shape [V, 3, 3], got {r.shape}')
  if not np.isfinite(r).all():
    raise ValueError(f'{name} contain NaN or inf')
  error = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(initial=0.0)
  if error > 1e-4 or (len(r) and np.linalg.det(r).min() < 0):
    raise ValueError(f'{name} are not rotation matrices (|R R^T - I| = {error:.2g}, or det < 0)')
  return r


# ----------------------------------------------------------------------------------------------


class MeshRaycaster:
  """First-hit ray casting of one normalised mesh under many rotations.

  Build once per mesh (this builds the BVH), then call `spheres` and `views` with batches of
  rotations. Do not share one instance between threads (the convex hull is built on first use);
  use `num_threads` instead.
  """

  def __init__(self, mesh, engine='auto', num_threads=1):
    """Args:
      mesh: trimesh.Trimesh in the unit ball (output of `load_mesh` / `normalize_mesh`).
      engine: 'auto' (embree if available), 'embree' or 'trimesh'.
      num_threads: threads tracing one batch (embree only). 1 by default: data pipelines
        usually run one caster per process already.
    """
    if int(num_threads) != num_threads or num_threads < 1:
      raise ValueError(f'num_threads must be a positive integer, got {num_threads!r}')
    self.num_threads = int(num_threads)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
      raise ValueError(f'MeshRaycaster: bad mesh arrays, vertices {vertices.shape}, '
                       f'faces {faces.shape}')
    if len(faces) == 0 or not np.isfinite(vertices).all():
      raise ValueError('MeshRaycaster: the mesh has no faces or non-finite vertices')
    radius = np.linalg.norm(vertices[np.unique(faces)], axis=-1).max()
    if radius > 1 + _UNIT_BALL_TOLERANCE:
      raise ValueError(f'MeshRaycaster: the mesh reaches radius {radius:.4g} > 1; normalise it '
                       'first with datasets.normalize_mesh')
    self.engine_name = engine
    self._vertices, self._faces = vertices, faces
    self._surfaces = {'mesh': (_make_engine(vertices, faces, engine),
                               unit_face_normals(vertices, faces))}

  def _surface(self, name):
    """(engine, unit face normals) of 'mesh' or 'hull' (built on first use)."""
    if name not in self._surfaces:
      vertices, faces = _convex_hull(self._vertices)
      self._surfaces[name] = (_make_engine(vertices, faces, self.engine_name),
                              unit_face_normals(vertices, faces))
    return self._surfaces[name]

  def cast(self, origins, directions, surface='mesh'):
    """First hits of rays in the mesh frame.

    Args:
      origins: `[N, 3]`; directions: `[N, 3]` unit vectors.
      surface: 'mesh' or 'hull' (the convex hull).

    Returns:
      distance `[N]` float64 (inf for a miss), |cos| `[N]` float64 between ray and face normal
      (0 for a miss).
    """
    engine, normals = self._surface(surface)
    count = len(origins)
    threads = self.num_threads if engine.parallel else 1
    chunk = max(1, min(engine.max_rays_per_call, -(-count // threads)))
    parts = [slice(start, start + chunk) for start in range(0, count, chunk)]
    distance, abs_cos = np.empty(count), np.empty(count)

    def trace(part):
      d, face = engine.first_hits(origins[part], directions[part])
      cos = np.abs(np.einsum('ij,ij->i', normals[face], directions[part]))
      distance[part], abs_cos[part] = d, np.where(face >= 0, cos, 0.0)

    if threads > 1 and len(parts) > 1:
      with futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(trace, parts))  # list(): re-raises a worker's exception here
    else:
      for part in parts:
        trace(part)
    return distance, abs_cos

  def spheres(self, rotations, bandwidth=32, extra_channels=(), oversample=1):
    """Spherical maps of `R . mesh` for each `R`.

    Args:
      rotations: `[V, 3, 3]`.
      bandwidth: B; maps are `2B x 2B` (Driscoll-Healy grid).
      extra_channels: names from `SPHERE_CHANNELS` after 'depth' and 'cos'.
      oversample: k; k > 1 casts on the grid of bandwidth kB and low-passes to bandwidth B
        (see the module docstring). Costs k^2 the rays plus one SHT at kB per map.

    Returns:
      float32 `[V, 2B, 2B, 2 + len(extra_channels)]`: with k = 1 every value in [0, 1]; with
      k > 1 band-limited (degree < B), values slightly outside [0, 1] near silhouettes.
    """
    if isinstance(oversample, bool) or int(oversample) != oversample or oversample < 1:
      raise ValueError(f'oversample must be a positive integer, got {oversample!r}')
    if oversample > 1:
      fine = self.spheres(rotations, int(oversample) * bandwidth, extra_channels)
      return low_pass(fine, bandwidth)
    rotations = _as_rotations(rotations)
    channels = BASE_SPHERE_CHANNELS + tuple(extra_channels)
    unknown = [c for c in channels if c not in SPHERE_CHANNELS]
    if unknown:
      raise ValueError(f'unknown sphere channels {unknown}; known: {sorted(SPHERE_CHANNELS)}')
    grid = sphere_rays(bandwidth)
    # Row vectors: (R^T x)^T = x^T R, so all rotated grids are one matmul.
    directions = np.matmul(grid, rotations).reshape(-1, 3)
    origins = (1 + RAY_START_OFFSET) * directions
    directions = -directions

    cast = {}
    out = np.empty((len(rotations), 2 * bandwidth, 2 * bandwidth, len(channels)), np.float32)
    for i, channel in enumerate(channels):
      surface, quantity = SPHERE_CHANNELS[channel]
      if surface not in cast:
        cast[surface] = self.cast(origins, directions, surface)
      distance, abs_cos = cast[surface]
      if quantity == 'depth':
        value = np.clip((distance - RAY_START_OFFSET) / 2, 0.0, 1.0)  # inf (miss) -> 1
      else:
        value = abs_cos
      out[..., i] = value.reshape(out.shape[:-1])
    return out

  def views(self, rotations, size=64, return_depth=False, return_mask=False):
    """Shaded views of `R . mesh` from the fixed camera, for each `R`.

    Args:
      rotations: `[V, 3, 3]`.
      size: image height = width in pixels.
      return_depth, return_mask: also return those (see below).

    Returns:
      image float32 `[V, size, size, 1]` in [0, 1] (0 = background); if asked, followed by
      depth float32 `[V, size, size, 1]` (distance from the camera centre, 0 on the background)
      and mask bool `[V, size, size, 1]` (True where the mesh is hit), as a tuple in that order.
    """
    rotations = _as_rotations(rotations)
    pixels = camera_rays(size)
    count = len(rotations)
    directions = np.matmul(pixels, rotations).reshape(-1, 3)
    origins = np.repeat(camera_position() @ rotations, len(pixels), axis=0)
    distance, abs_cos = self.cast(origins, directions)
    hit = np.isfinite(distance)
    shape = (count, size, size, 1)
    image = np.where(hit, shade(abs_cos, distance), 0.0).astype(np.float32).reshape(shape)
    if not (return_depth or return_mask):
      return image
    outputs = [image]
    if return_depth:
      outputs.append(np.where(hit, distance, 0.0).astype(np.float32).reshape(shape))
    if return_mask:
      outputs.append(hit.reshape(shape))
    return tuple(outputs)


def shade(abs_cos, distance):
  """The grey level of a hit (module docstring): Lambertian with ambient, dimmed with `distance`.

  Args:
    abs_cos: `|cos|` of the angle between the camera ray and the surface normal, any shape.
    distance: distance from the camera centre to the hit, in [CAMERA_DISTANCE - 1,
      CAMERA_DISTANCE + 1] for a normalised mesh, same shape (clipped to that range).

  Returns:
    `(AMBIENT + (1 - AMBIENT) |cos|) (1 - DEPTH_CUE t)`, `t` = the distance mapped to [0, 1];
    in [AMBIENT (1 - DEPTH_CUE), 1].
  """
  near = CAMERA_DISTANCE - 1.0
  depth = np.clip((np.asarray(distance) - near) / 2.0, 0.0, 1.0)
  return (AMBIENT + (1 - AMBIENT) * np.asarray(abs_cos)) * (1 - DEPTH_CUE * depth)


# ----------------------------------------------------------------------------------------------
# Single-call wrappers (one rotation). For many rotations of one mesh, use MeshRaycaster.


def _one_rotation(rotation):
  if rotation is None:
    return np.eye(3)[None]
  r = np.asarray(rotation, dtype=np.float64)
  if r.shape != (3, 3):
    raise ValueError(f'rotation must be a 3x3 matrix or None, got shape {r.shape}')
  return r[None]


def mesh_to_sphere(mesh, rotation=None, bandwidth=32, extra_channels=(), engine='auto',
                   oversample=1):
  """Spherical map of `rotation . mesh`, float32 `[2B, 2B, 2 + len(extra_channels)]`.

  See the module docstring for the channels and `oversample`; `mesh` must be normalised.
  """
  caster = MeshRaycaster(mesh, engine=engine)
  return caster.spheres(_one_rotation(rotation), bandwidth, extra_channels, oversample)[0]


def render_view(mesh, rotation=None, size=64, return_depth=False, return_mask=False,
                engine='auto'):
  """View of `rotation . mesh`: image float32 `[size, size, 1]` in [0, 1].

  With `return_depth` / `return_mask`, returns a tuple `(image, depth, mask)` (only those asked
  for, in that order), each `[size, size, 1]`; see `MeshRaycaster.views`.
  """
  caster = MeshRaycaster(mesh, engine=engine)
  result = caster.views(_one_rotation(rotation), size, return_depth, return_mask)
  if isinstance(result, tuple):
    return tuple(x[0] for x in result)
  return result[0]
