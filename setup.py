"""Cross-Domain 3D Equivariant Image Embeddings (Esteves et al., ICML 2019) in TensorFlow 2."""
import setuptools

INSTALL_REQUIRES = [
    'tensorflow>=2.21,<2.22',
    'tensorflow-hub',
    'tensorflow-datasets',
    'tensorflow-graphics',
    'tensorboard',
    'numpy',
    'absl-py',
    'trimesh',
    'embreex',
    'rtree',                # trimesh's ray_triangle (the ray caster's fallback engine) needs it
    'importlib_resources',  # tensorflow-datasets imports it without declaring it
    'scipy',                # trimesh's normals and hulls
    'pillow',               # PNG contact sheets and the two-image CLI
    'matplotlib',           # plots
    'tqdm',                 # progress bars
]

EXTRAS_REQUIRE = {
    # dill: tensorflow-datasets' test case needs it; tf_keras: the hub.KerasLayer route
    # (TF_USE_LEGACY_KERAS=1) of tests/test_model_card.py.
    'test': ['pytest', 'dill', 'tf_keras'],
    # Beam pins protobuf and pyarrow differently: never part of the default install.
    'beam': ['apache-beam'],
}

setuptools.setup(
    name='equivariant-image-embeddings',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=['geometry', 'geometry.*', 'datasets', 'datasets.*',
                                               'correlation', 'correlation.*', 'models',
                                               'models.*', 'evaluation', 'evaluation.*',
                                               'pipeline', 'pipeline.*']),
    py_modules=['train', 'evaluate', 'main'],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
