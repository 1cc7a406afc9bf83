from benchmarks.peers import table

table.main()
