"""Thread counts for the correlation benchmarks, fixed before numpy, TF or a worker starts.

BLAS, OpenMP and XLA read their thread counts once, at import or start-up, so a benchmark script reads
its `--threads` flag from argv and sets the environment before importing them (and hands the same
environment to its worker processes). Only the standard library here: it runs before numpy.
"""
import os


def threads_from_argv(argv):
  """The value of `--threads=N` or `--threads N` in `argv` as a string; '1' when absent."""
  for i, arg in enumerate(argv):
    value = arg.split('=', 1)[1] if arg.startswith('--threads=') else (
        argv[i + 1] if arg == '--threads' and i + 1 < len(argv) else None)
    if value is not None:
      return value
  return '1'


def thread_environment(threads):
  """Environment that holds numpy's BLAS, OpenMP (pysofft) and XLA (TF, JAX) to `threads` threads."""
  return {'OPENBLAS_NUM_THREADS': threads, 'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads,
          'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen='
                        f'{"true" if threads != "1" else "false"} '
                        f'intra_op_parallelism_threads={threads}').strip()}
