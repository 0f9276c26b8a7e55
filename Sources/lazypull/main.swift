import LazyPullCommands

LazyPullCommand.main()
