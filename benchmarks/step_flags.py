"""Command-line flags of the benchmarks that run one correlation step (`bench_correlation_pieces.py`,
`profile_correlation_step.py`): the step's size and the thread count, all positive integers; and
the comma-separated lists of positive integers that the table benchmarks take."""
import argparse


def parse_step_flags(description, argv, **more):
  """Parses `--bandwidth`, `--channels`, `--pairs`, `--threads` and one int flag per `more` item.

  Args:
    description: the script's one-line description.
    argv: arguments without the program name.
    **more: name -> (default, help) of further integer flags.
  Returns:
    the parsed namespace; exits with a usage error naming any flag below 1.
  """
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--bandwidth', type=int, default=32, help='B: maps 2B x 2B')
  parser.add_argument('--channels', type=int, default=32)
  parser.add_argument('--pairs', type=int, default=1, help='pairs per call (one step)')
  parser.add_argument('--threads', type=int, default=1, help='TF, XLA, BLAS and scipy threads')
  for name, (default, help_text) in more.items():
    parser.add_argument(f'--{name}', type=int, default=default, help=help_text)
  args = parser.parse_args(argv)
  too_small = [f'--{name}' for name, value in vars(args).items() if value < 1]
  if too_small:
    parser.error(f'{", ".join(too_small)} must be positive')
  return args


def int_list(text, flag):
  """`'16,32'` -> `[16, 32]`; exits with a usage error naming `--flag` unless all are positive."""
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise SystemExit(f'--{flag} must be a comma-separated list of positive integers, got {text!r}')
  return values
