"""Loading triangle meshes and putting them in the canonical pose.

Every mesh the project uses goes through `normalize_mesh` exactly once, in its canonical pose
(docs/conventions.md, "Meshes and the camera"):
  1. the centre is the *area-weighted surface centroid*, `c = sum_i A_i m_i / sum_i A_i` over
     the faces `i` with area `A_i` and centroid `m_i`. Unlike the vertex mean or the bounding-box
     centre, it does not move when a region is tessellated more finely or when a CAD file repeats
     points, and unlike the volume centroid it is defined for open, non-watertight polygon soup;
  2. the mesh is translated so that `c` is the origin;
  3. it is scaled so that the farthest vertex (of those used by a face) lies at radius 1.
Rotations come after normalisation, about the origin.

Only the geometry is kept (vertices and triangles): colours, textures and materials are dropped.
Degenerate (zero-area) faces are kept: they are harmless to the ray caster, which gives them a
zero normal (see `datasets.raycast`).
"""
import pathlib
import re

import numpy as np
import trimesh

# Formats trimesh reads for us; the suffix decides the parser.
SUPPORTED_SUFFIXES = ('.off', '.obj', '.ply', '.stl', '.glb', '.gltf')

# OFF keyword with its optional prefixes (texture, colour, normal); ModelNet sometimes glues the
# counts to it ('OFF1234 5678 0').
_OFF_KEYWORD = re.compile(r'(ST)?C?N?OFF')

# A mesh whose total area is below this fraction of its squared bounding-box diagonal is a point,
# a segment or a set of slivers: nothing a ray can see.
_MIN_RELATIVE_AREA = 1e-12


def load_mesh(path):
  """Reads a mesh file and returns it normalised (see the module docstring).

  OFF (including ModelNet's malformed first line `OFF1234 5678 0`, where the counts are glued to
  the keyword), OBJ, PLY, STL, GLB and glTF are read; polygons are fan-triangulated; a scene with
  several geometries is merged into one mesh, each part placed by its scene transform.

  Args:
    path: str or os.PathLike.

  Returns:
    trimesh.Trimesh, float64 vertices `[N, 3]` with max norm 1, int64 faces `[F, 3]`. Its
    `metadata['normalization']` holds the original `centre` (3,) and `scale` such that
    `original_vertex = vertex * scale + centre`, and `metadata['source']` the path.

  Raises:
    ValueError naming the file: missing, unsupported suffix, unreadable, no faces, NaN/inf
      vertices, bad face indices, or zero total area.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f'load_mesh: no such mesh file: {path}')
  suffix = path.suffix.lower()
  if suffix not in SUPPORTED_SUFFIXES:
    raise ValueError(f'load_mesh: unsupported mesh format {suffix!r} for {path} '
                     f'(supported: {", ".join(SUPPORTED_SUFFIXES)})')
  _check_container(path, suffix)
  try:
    if suffix == '.off':
      loaded = trimesh.Trimesh(*read_off(path), process=False)
    else:
      # force='mesh' concatenates a scene's geometries with their transforms applied.
      # process=False: no silent clean-up (trimesh would drop NaN vertices we must report).
      loaded = trimesh.load(str(path), force='mesh', process=False)
  except FileNotFoundError as e:  # a glTF or OBJ naming a buffer or material file that is absent
    raise ValueError(f'load_mesh: cannot read {path}: it refers to a missing file '
                     f'({e.filename or e})') from e
  except Exception as e:  # trimesh raises many types (ValueError, KeyError, struct.error, ...)
    raise ValueError(f'load_mesh: cannot read {path}: {type(e).__name__}: {e}') from e
  if not isinstance(loaded, trimesh.Trimesh):
    raise ValueError(f'load_mesh: {path} holds no triangle mesh (got {type(loaded).__name__})')
  if len(loaded.faces) == 0:
    points = _point_count(path)
    if points:
      raise ValueError(f'load_mesh: {path} has no faces (a point cloud of {points} points)')
  mesh = normalize_mesh(loaded, source=str(path))
  mesh.metadata['source'] = str(path)
  return mesh


def _check_container(path, suffix):
  """Raises ValueError unless a glTF file is JSON text and a GLB file starts with its magic
  number (otherwise trimesh reports a confusing error, such as a missing file)."""
  if suffix == '.glb':
    with open(path, 'rb') as f:
      if f.read(4) != b'glTF':
        raise ValueError(f'load_mesh: {path} is not a GLB file (no glTF magic number)')
  elif suffix == '.gltf':
    with open(path, 'rb') as f:
      head = f.read(64).lstrip(b'\xef\xbb\xbf \t\r\n')
    if not head.startswith(b'{'):
      raise ValueError(f'load_mesh: {path} is not a glTF file (not a JSON object)')


def _point_count(path):
  """The number of points when the file holds a point cloud (vertices, no faces), else 0."""
  try:
    loaded = trimesh.load(str(path), process=False)
  except Exception:  # pylint: disable=broad-except  (only a better message is at stake)
    return 0
  return len(loaded.vertices) if isinstance(loaded, trimesh.PointCloud) else 0


def read_off(path):
  """Parses an OFF file (no normalisation): `(vertices float64 [N, 3], faces int64 [F, 3])`.

  Accepts the keyword variants OFF/COFF/NOFF/STOFF (extra vertex columns are ignored), `#`
  comments, the counts on their own line or glued to the keyword (ModelNet's `OFF1234 5678 0`),
  and polygon faces, which are fan-triangulated (faces of fewer than 3 vertices are dropped).
  About 10x faster than trimesh's OFF reader: numpy's C parser reads the tables.

  Raises:
    ValueError: not an OFF file, bad counts, truncated, or non-numeric tables.
  """
  text = pathlib.Path(path).read_bytes().decode('latin-1')  # never fails; numbers are ASCII
  if '#' in text:
    text = re.sub(r'#[^\n\r]*', '', text)
  lines = [line for line in map(str.strip, text.splitlines()) if line]
  keyword = _OFF_KEYWORD.match(lines[0]) if lines else None
  if keyword is None:
    raise ValueError('not an OFF file: the first line does not start with OFF')
  glued = lines[0][keyword.end():].split()
  counts, start = (glued, 1) if glued else ((lines[1].split() if len(lines) > 1 else []), 2)
  try:
    num_vertices, num_faces = int(counts[0]), int(counts[1])
  except (IndexError, ValueError):
    raise ValueError(f'bad vertex/face count line {" ".join(counts)!r}') from None
  if num_vertices < 0 or num_faces < 0 or start + num_vertices + num_faces > len(lines):
    raise ValueError(f'{num_vertices} vertices and {num_faces} faces announced, but the file has '
                     f'{len(lines) - start} lines after the header')
  if num_vertices == 0 or num_faces == 0:
    raise ValueError(f'no {"vertices" if num_vertices == 0 else "faces"} (header counts '
                     f'{num_vertices} {num_faces})')
  vertices = np.loadtxt(lines[start:start + num_vertices], dtype=np.float64, ndmin=2)
  if vertices.shape[1] < 3:
    raise ValueError(f'vertex lines need 3 coordinates, got {vertices.shape[1]}')
  vertices = vertices[:, :3].reshape(num_vertices, 3)
  face_lines = lines[start + num_vertices:start + num_vertices + num_faces]
  return vertices, _triangulate_off_faces(face_lines)


def _triangulate_off_faces(face_lines):
  """OFF face lines `n i_1 .. i_n [colour]` -> triangles int64 `[F, 3]` (fans around i_1)."""
  try:
    # Fast path: every line has the same number of integer columns (ModelNet: '3 a b c').
    table = np.loadtxt(face_lines, dtype=np.int64, ndmin=2)
    by_size = {n: table[table[:, 0] == n, 1:n + 1] for n in np.unique(table[:, 0])}
  except ValueError:  # ragged lines: mixed polygon sizes, or float colours after the indices
    by_size = {}
    for line in face_lines:
      row = line.split()
      by_size.setdefault(int(row[0]), []).append(row[1:int(row[0]) + 1])
    by_size = {n: np.array(rows, dtype=np.int64).reshape(len(rows), -1)
               for n, rows in by_size.items()}
  triangles = [np.zeros((0, 3), np.int64)]
  for n, polygons in by_size.items():
    if polygons.shape[1] != n:
      raise ValueError(f'a face announces {n} vertices but lists {polygons.shape[1]}')
    for i in range(1, n - 1):  # no triangle for n < 3: points and edges are not surfaces
      triangles.append(np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]], axis=-1))
  return np.concatenate(triangles)


def normalize_mesh(mesh, source='mesh'):
  """Returns a copy of `mesh` in the canonical normalisation (see the module docstring).

  Vertices no face uses are dropped first (they would otherwise set the scale); exact duplicate
  vertices are merged. Normalising an already normalised mesh changes it only by rounding.

  Args:
    mesh: trimesh.Trimesh (or trimesh.Scene, merged first).
    source: name used in error messages (load_mesh passes the file path).

  Returns:
    A new trimesh.Trimesh with float64 vertices of max norm 1 and area-weighted centroid at the
    origin; `metadata['normalization'] = {'centre': [3], 'scale': float}` maps it back to the input:
    `input_vertex = vertex * scale + centre`.

  Raises:
    ValueError naming `source` for an empty, non-finite or zero-area mesh.
  """
  if isinstance(mesh, trimesh.Scene):
    mesh = mesh.to_mesh() if hasattr(mesh, 'to_mesh') else mesh.dump(concatenate=True)
  if not isinstance(mesh, trimesh.Trimesh):
    raise ValueError(f'normalize_mesh: {source}: expected a trimesh.Trimesh, '
                     f'got {type(mesh).__name__}')
  vertices = np.asarray(mesh.vertices, dtype=np.float64)
  faces = np.asarray(mesh.faces, dtype=np.int64)
  _check_geometry(vertices, faces, source)

  # Keep only the vertices the faces use, renumbered.
  used, faces = np.unique(faces, return_inverse=True)
  faces = faces.reshape(-1, 3)
  vertices = vertices[used]

  # Subtract a nearby point first so huge CAD coordinates (1e5 and more) lose no precision in the
  # cross products below.
  offset = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
  local = vertices - offset
  triangles = local[faces]
  with np.errstate(over='ignore', invalid='ignore'):  # overflow is reported below
    areas = 0.5 * np.linalg.norm(
        np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=-1)
    total_area = areas.sum()
    diagonal = np.linalg.norm(local.max(axis=0) - local.min(axis=0))
  if not (np.isfinite(total_area) and np.isfinite(diagonal)):
    raise ValueError(f'normalize_mesh: {source}: non-finite or overflowing coordinates (largest '
                     f'|coordinate| {np.abs(vertices).max():.3g}: areas overflow float64)')
  if not total_area > _MIN_RELATIVE_AREA * diagonal**2:
    raise ValueError(f'normalize_mesh: {source}: the surface has zero area '
                     f'({len(faces)} faces, total area {total_area:.3g})')
  centroid = (areas @ triangles.mean(axis=1)) / total_area
  local = local - centroid
  scale = np.linalg.norm(local, axis=-1).max()

  normalized = trimesh.Trimesh(local / scale, faces, process=False)
  normalized.merge_vertices()
  normalized.metadata['normalization'] = {'centre': offset + centroid, 'scale': float(scale)}
  return normalized


def _check_geometry(vertices, faces, source):
  """Raises ValueError naming `source` unless vertices `[N, 3]` and faces `[F, 3]` are usable."""
  if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
    raise ValueError(f'normalize_mesh: {source}: no vertices (shape {vertices.shape})')
  if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
    raise ValueError(f'normalize_mesh: {source}: no triangle faces (shape {faces.shape})')
  if faces.min() < 0 or faces.max() >= len(vertices):
    raise ValueError(f'normalize_mesh: {source}: face indices outside [0, {len(vertices)})')
  finite = np.isfinite(vertices).all(axis=1)
  if not finite.all():
    raise ValueError(f'normalize_mesh: {source}: {np.count_nonzero(~finite)} vertices are NaN or '
                     f'infinite (first at index {np.argmin(finite)})')
