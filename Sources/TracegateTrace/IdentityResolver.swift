import Foundation

/// Decides a trace's user and session from the sources configured (`user_from`, `session_from`),
/// in order: the first that yields a valid value (not empty, no control characters) wins. Values
/// may then be pseudonymised (`identity_hash`). Runs when the trace is built.
public struct IdentityResolver: Sendable {
    public let userSources: [IdentitySource]
    public let sessionSources: [IdentitySource]
    /// When set, user and session ids leave as the HMAC-SHA-256 of the value (64 hex digits).
    public let pseudonymiser: HMACSHA256?
    /// Whether sessions follow `previous_response_id` (then every response's session is remembered).
    public let followsResponseChains: Bool
    /// Query parameters whose values are ids: redacted from `url.path` when ids are pseudonymised.
    private let pseudonymisedQueryNames: Set<String>

    public init(
        userSources: [IdentitySource] = [.header("X-User-ID")], sessionSources: [IdentitySource] = [.header("X-Session-ID")],
        pseudonymiser: HMACSHA256? = nil
    ) {
        self.userSources = userSources
        self.sessionSources = sessionSources
        self.pseudonymiser = pseudonymiser
        followsResponseChains = sessionSources.contains(.responseChain)
        pseudonymisedQueryNames =
            pseudonymiser == nil
            ? []
            : Set((userSources + sessionSources).compactMap { source in
                if case .query(let name) = source { return name }
                return nil
            })
    }

    /// The sources read from the request head, user sources first: what the tap looks up.
    public var headSources: (user: [IdentitySource], session: [IdentitySource]) {
        (userSources.filter(\.readsHead), sessionSources.filter(\.readsHead))
    }

    /// A value and the source that gave it.
    public struct Choice: Sendable, Equatable {
        public var value: String
        public var source: IdentitySource
        /// Not empty after trimming, and no control character: what validation keeps.
        public var isValid: Bool
        /// Already as exported (a session the chain remembered): not pseudonymised again.
        public var isExported = false

        init(value: String, source: IdentitySource, isExported: Bool = false) {
            self.value = value
            self.source = source
            self.isValid = isExported || IdentityResolver.isValid(value)
            self.isExported = isExported
        }
    }

    /// The value to hand to `IdentityValues.validate`: the pseudonym of a valid value, an invalid
    /// one as it is (validation drops it with a warning), a remembered session unchanged.
    func exported(_ choice: Choice?) -> String? {
        guard let choice else { return nil }
        return choice.isValid && !choice.isExported ? pseudonym(choice.value) : choice.value
    }

    /// What the request said about itself, for sources that need more than the head.
    public struct Request {
        var body: () -> PayloadJSON?
        /// The Responses API response this exchange produced, and the one it continues.
        var responseID: String?
        var previousResponseID: String?
    }

    /// The user: the first valid value among the sources, else the first value seen (which
    /// validation will then drop with a warning), else nil.
    func user(headValues: IdentityHeadValues, request: Request) -> Choice? {
        choose(userSources, headValues: headValues, request: request, chained: nil)
    }

    func session(headValues: IdentityHeadValues, request: Request, chain: ResponseSessionChain) -> Choice? {
        var chained: Choice?
        if let previous = request.previousResponseID {
            if let known = chain.session(continuing: previous) {
                chained = Choice(value: known, source: .responseChain, isExported: true)
            } else {
                chained = Choice(value: previous, source: .responseChain)
            }
        } else if let own = request.responseID {
            chained = Choice(value: own, source: .responseChain)
        }
        return choose(sessionSources, headValues: headValues, request: request, chained: chained)
    }

    private func choose(_ sources: [IdentitySource], headValues: IdentityHeadValues, request: Request, chained: Choice?) -> Choice? {
        var firstSeen: Choice?
        var headIndex = 0
        for source in sources {
            let choice: Choice?
            switch source {
            case .header, .cookie, .query, .baggage, .jwt:
                let raw = headValues[headIndex]
                headIndex += 1
                if case .jwt(let claim, _) = source {
                    choice = raw.flatMap { Self.claim(claim, inPayload: $0) }.map { Choice(value: $0, source: source) }
                } else {
                    choice = raw.map { Choice(value: $0, source: source) }
                }
            case .body(let path):
                choice = request.body().flatMap { Self.scalar(at: path, in: $0) }.map { Choice(value: $0, source: source) }
            case .responseChain:
                choice = chained
            }
            guard let choice else { continue }
            if choice.isValid { return choice }
            if firstSeen == nil { firstSeen = choice }
        }
        return firstSeen
    }

    /// The user a trace of this request would record, from the head sources alone (a feedback post
    /// carries no chat body): chosen, pseudonymised and validated.
    public func exportedUser(header: (String) -> String?, target: String) -> String? {
        let values = IdentityHeadValues(reading: headSources.user, header: header, target: target)
        let request = Request(body: { nil }, responseID: nil, previousResponseID: nil)
        return IdentityValues.validate(user: exported(user(headValues: values, request: request)), session: nil, requestID: nil).user
    }

    /// What validation would keep: something left after trimming, and no control character.
    static func isValid(_ value: String) -> Bool {
        let trimmed = IdentityValues.mayNeedTrimming(value) ? value.trimmingCharacters(in: .whitespacesAndNewlines) : value
        return !trimmed.isEmpty && !MLflowLimits.containsControlCharacter(trimmed)
    }

    /// The target with the values of query parameters used as identity sources replaced, when ids
    /// are pseudonymised (else the clear value would still leave in `url.path`).
    public func redactingIdentityQuery(_ target: String) -> String {
        guard !pseudonymisedQueryNames.isEmpty, let question = target.firstIndex(of: "?") else { return target }
        let parameters = target[target.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).map {
            parameter -> Substring in
            guard let equals = parameter.firstIndex(of: "="),
                let name = IdentityHeadReader.percentDecoded(parameter[..<equals]), pseudonymisedQueryNames.contains(name)
            else { return parameter }
            return parameter[...equals] + Substring(Redaction.marker)
        }
        return String(target[...question]) + parameters.joined(separator: "&")
    }

    /// The pseudonym of a valid value (trimmed first, so ` a` and `a` group together).
    func pseudonym(_ value: String) -> String {
        guard let pseudonymiser else { return value }
        let trimmed = IdentityValues.mayNeedTrimming(value) ? value.trimmingCharacters(in: .whitespacesAndNewlines) : value
        return pseudonymiser.hex(trimmed)
    }

    /// A claim of a JWT payload segment (base64url JSON): a string as is, an integer as its digits.
    static func claim(_ name: String, inPayload segment: String) -> String? {
        var base64 = segment.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let payload = PayloadJSON.parse(data) else { return nil }
        return payload[name].flatMap(scalarText)
    }

    /// The string or integer at a dotted path of object keys; an object there stands for its `id`
    /// (the Responses API's `conversation` is `"conv_…"` or `{"id": "conv_…"}`).
    static func scalar(at path: [String], in json: PayloadJSON) -> String? {
        var node: PayloadJSON? = json
        for key in path { node = node?[key] }
        if let node, node.isObject { return node["id"].flatMap(scalarText) }
        return node.flatMap(scalarText)
    }

    private static func scalarText(_ value: PayloadJSON) -> String? {
        if let text = value.string { return text }
        if let number = value.int { return String(number) }
        return nil
    }
}
