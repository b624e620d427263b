/// The `--help` text, generated from the settings table.
enum Usage {
    static var text: String {
        var lines = [
            "Settings come from flags, then environment variables, then the config file, then defaults",
            "(earlier wins). Flags take --name VALUE or --name=VALUE; booleans may be given bare",
            "(--preserve-host). In the config file the same names are written key = value.",
            "",
            "  \(SettingsTable.configFlag) PATH  (env \(SettingsTable.configEnvironmentVariable))",
            "      Config file to read (key = value lines, # comments). Only read when given.",
        ]
        for setting in SettingsTable.all {
            let value = setting.isBoolean ? "[=\(setting.placeholder)]" : " \(setting.placeholder)"
            let defaultText: String
            switch setting.defaultValue {
            case .required: defaultText = "required"
            case .value(let text) where text.isEmpty: defaultText = "default: none"
            case .value(let text): defaultText = "default: \(text)"
            }
            lines.append("")
            lines.append("  \(setting.flag)\(value)  (env \(setting.environmentVariable), \(defaultText))")
            lines.append("      \(setting.doc)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
