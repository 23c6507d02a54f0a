import ArgumentParser

DNPipes.main(MountHelperForm.rewrite(Array(CommandLine.arguments.dropFirst())))
