"""Evaluation: relative pose from embeddings, view synthesis, embeddings export and the user tools.

Modules, each with one job:
  embeddings_io     the embeddings file (.npz): validate, load, save;
  embeddings_export run an exported embedder (and the teacher) over a dataset split;
  pairs             same-instance / different-instance pairs from ids, independent of row order;
  alignment         the relative-pose experiment and its statistics (median, mean, Acc@10/30);
  synthesis         rotate an embedding, decode it, compare with the true view (L1, PSNR, SSIM);
  results, plots    the results CSV, markdown rows, error CDF and image grids;
  images            user photos -> training-like views; rotation_formats: matrix/quaternion/Euler;
  models_io         SavedModel embedder/synthesiser and hub teacher as batched numpy functions;
  relpose           the two-image relative-pose tool and the novel-view tool;
  commands          the commands of evaluate.py as plain functions.
"""
from evaluation.alignment import (align_pairs, fold_symmetric, relative_rotations, run_alignment,
                                  summarize_errors)
from evaluation.embeddings_io import load_embeddings, save_embeddings
from evaluation.pairs import make_pairs

__all__ = ['align_pairs', 'fold_symmetric', 'relative_rotations', 'run_alignment',
           'summarize_errors', 'load_embeddings', 'save_embeddings', 'make_pairs']
