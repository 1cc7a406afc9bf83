from benchmarks.harness import cli

cli.main()
