import Foundation
import TracegateConfig
import TracegateServer

/// `tracegate [run|check-config|help|version] [--flags]`
let version = "0.1.0"
var arguments = Array(CommandLine.arguments.dropFirst())
let command: String
if let first = arguments.first, !first.hasPrefix("-") {
    command = first
    arguments.removeFirst()
} else {
    command = "run"
}

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("tracegate: \(message)\n".utf8))
    exit(code)
}

if arguments.contains("--help") || arguments.contains("-h") || command == "help" {
    print("usage: tracegate [run | check-config | version] [--config PATH] [--<setting> VALUE ...]")
    print("       tracegate push FILE [FILE ...] [--mlflow-tracking-uri URL] [--mlflow-experiment-name NAME] ...")
    print("       (a rotated trace file's older parts are FILE.1, FILE.2, …: `tracegate push traces.jsonl*`)\n")
    print(SettingsLoader.usage)
    exit(0)
}
if command == "version" || arguments.contains("--version") {
    print("tracegate \(version)")
    exit(0)
}
guard command == "run" || command == "check-config" || command == "push" else {
    fail("unknown command '\(command)': expected run, check-config, push, help or version", code: 2)
}
var pushFiles: [String] = []
if command == "push" {
    while let next = arguments.first, !next.hasPrefix("-") { pushFiles.append(arguments.removeFirst()) }
    guard !pushFiles.isEmpty else {
        fail("push needs the trace files first: tracegate push FILE [FILE ...] [--flags]", code: 2)
    }
}

let settings: TracegateSettings
do {
    settings = try SettingsLoader.load(
        arguments: arguments,
        environment: ProcessInfo.processInfo.environment,
        readFile: { path in try String(contentsOfFile: path, encoding: .utf8) },
        requireUpstream: command != "push"
    )
} catch {
    fail("configuration error: \(error)", code: 2)
}

if command == "check-config" {
    print("configuration OK: listen \(settings.listen), admin \(settings.adminListen), upstream \(settings.upstream)")
    exit(0)
}
if !pushFiles.isEmpty {
    exit(await TracegateApp.push(files: pushFiles, settings: settings))
}
exit(await TracegateApp.run(settings: settings))
