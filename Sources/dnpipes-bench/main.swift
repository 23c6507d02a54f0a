// The benchmark's entry point; everything else lives in the other files, outside the main actor.
Bench.main()
