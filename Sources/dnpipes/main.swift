import ArgumentParser

/// The arguments as the commands see them (the mount(8) helper form already rewritten).
let arguments = MountHelperForm.rewrite(Array(CommandLine.arguments.dropFirst()))
DNPipes.main(arguments)
