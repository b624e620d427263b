/// Picks the settings out of an environment: each setting's variable, plus `TRACEGATE_CONFIG`.
enum EnvironmentSettings {
    struct Value {
        var setting: SettingDescriptor
        var text: String
    }

    struct Parsed {
        var configPath: String?
        var values: [Value] = []
    }

    /// Reads the known variables (in table order) and refuses unknown `TRACEGATE_*` variables,
    /// which are most likely typos. Other variables are ignored.
    static func parse(_ environment: [String: String]) throws(ConfigError) -> Parsed {
        let known = SettingsTable.all.map(\.environmentVariable) + [SettingsTable.configEnvironmentVariable]
        for name in environment.keys.sorted()
        where name.hasPrefix(SettingsTable.environmentPrefix) && !known.contains(name) {
            let hint = Suggestions.closest(to: name, among: known).map { " (did you mean \($0)?)" } ?? ""
            throw ConfigError(source: .environment(name), key: nil, message: "unknown setting\(hint)")
        }

        var parsed = Parsed()
        if let path = environment[SettingsTable.configEnvironmentVariable], !path.isEmpty {
            parsed.configPath = path
        }
        for setting in SettingsTable.all {
            if let text = environment[setting.environmentVariable] {
                parsed.values.append(Value(setting: setting, text: text))
            }
        }
        return parsed
    }
}
