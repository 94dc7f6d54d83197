"""Exit codes of the command line, shared by every subcommand (cli.py, tune.py, mcmc/command.py).

0 success; 1 an unexpected error (a one-line summary; the traceback with --debug); 2 bad input
(recipe, data, checkpoint, arguments: one message naming what is wrong); 3 the guard stopped the
run; 130 interrupted (a checkpoint was written; --resume continues).
"""

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
