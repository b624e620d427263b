/// Realistic request and response bodies of the three chat APIs, shaped after the APIs' documented
/// examples (ids, field order, null fields, pings and sequence numbers included).
enum ChatFixtures {
    // MARK: Helpers

    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// An SSE body from (event name, data) pairs, one blank line after each event.
    static func sse(_ events: [(String?, String)], lineEnd: String = "\n") -> String {
        events.map { name, data in
            (name.map { "event: \($0)\(lineEnd)" } ?? "") + "data: \(data)\(lineEnd)\(lineEnd)"
        }.joined()
    }

    // MARK: OpenAI Chat Completions

    static let chatPath = "/v1/chat/completions"

    static let chatRequest = #"""
    {"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hi there"},{"role":"assistant","content":"Hello!"},{"role":"user","content":[{"type":"text","text":"What's the weather"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"text","text":"in Paris?"}]}],"temperature":0.2}
    """#

    static let chatStreamRequest = #"""
    {"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello in French and Japanese"}]}
    """#

    static let chatCompletion = #"""
    {
      "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
      "object": "chat.completion",
      "created": 1741569952,
      "model": "gpt-4o-mini-2024-07-18",
      "choices": [
        {
          "index": 0,
          "message": {
            "role": "assistant",
            "content": "It is sunny in Paris, 22 °C.",
            "refusal": null,
            "annotations": []
          },
          "logprobs": null,
          "finish_reason": "stop"
        }
      ],
      "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
      },
      "service_tier": "default",
      "system_fingerprint": "fp_06737a9306"
    }
    """#

    static let chatCompletionWithToolCalls = #"""
    {"id":"chatcmpl-abc123","object":"chat.completion","created":1699896916,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_current_weather","arguments":"{\n\"location\": \"Boston, MA\"\n}"}},{"id":"call_def456","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"America/New_York\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}
    """#

    private static func chunk(_ choices: String, usage: String = "null") -> String {
        #"{"id":"chatcmpl-AaJqzKVMd6zL4DbHf6qdWT4TtlpvA","object":"chat.completion.chunk","created":1733262731,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0705bf87c0","choices":"#
            + choices + #","usage":"# + usage + "}"
    }

    /// Text streamed in fragments (with multi-byte characters), then a finish chunk, then the usage-only chunk.
    static let chatStream = sse([
        (nil, chunk(#"[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"content":"Bonjour"},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"content":" ! En japonais : "},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"content":"こんにちは"},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"content":" 👋"},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#)),
        (nil, chunk("[]", usage: #"{"prompt_tokens":14,"completion_tokens":11,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#)),
        (nil, "[DONE]"),
    ])

    static let chatStreamText = "Bonjour ! En japonais : こんにちは 👋"

    /// Two parallel tool calls whose arguments arrive in fragments, interleaved.
    static let chatToolCallStream = sse([
        (nil, chunk(#"[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_ABC","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Paris, France\"}"}}]},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\": \"CET\"}"}}]},"logprobs":null,"finish_reason":null}]"#)),
        (nil, chunk(#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]"#)),
        (nil, "[DONE]"),
    ])

    // MARK: OpenAI Responses

    static let responsesPath = "/v1/responses"

    static let responsesRequest = #"""
    {"model":"gpt-4.1","input":[{"role":"developer","content":"Talk like a pirate."},{"role":"user","content":"Are semicolons optional in JavaScript?"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Arr, mostly."}]},{"type":"message","role":"user","content":[{"type":"input_text","text":"Write a haiku"},{"type":"input_image","image_url":"https://example.com/x.png"},{"type":"input_text","text":"about it."}]}],"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}]}
    """#

    static let responsesStringRequest = #"{"model":"gpt-4.1","input":"Tell me a three sentence bedtime story about a unicorn.","stream":true}"#

    static let responsesResponse = #"""
    {"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon, ","annotations":[]},{"type":"output_text","text":"a unicorn named Lumina slept.","annotations":[]}]},{"type":"function_call","id":"fc_12345xyz","call_id":"call_12345xyz","name":"get_weather","arguments":"{\"location\":\"Paris, France\"}","status":"completed"}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":4},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{}}
    """#

    private static let responseInProgress = #"{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}"#

    private static let responseCompleted = #"{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! ☀️","annotations":[]}]},{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"location\":\"Paris\"}","call_id":"call_1","name":"get_weather"}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}"#

    /// The events before `response.completed`: text in deltas, then a function call with argument deltas.
    static let responsesStreamEvents: [(String?, String)] = [
        ("response.created", #"{"type":"response.created","sequence_number":0,"response":"# + responseInProgress + "}"),
        ("response.in_progress", #"{"type":"response.in_progress","sequence_number":1,"response":"# + responseInProgress + "}"),
        ("response.output_item.added", #"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"in_progress","role":"assistant","content":[]}}"#),
        ("response.content_part.added", #"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}"#),
        ("response.output_text.delta", #"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":"Hi"}"#),
        ("response.output_text.delta", #"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":" there! ☀️"}"#),
        ("response.output_text.done", #"{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"text":"Hi there! ☀️"}"#),
        ("response.content_part.done", #"{"type":"response.content_part.done","sequence_number":7,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"part":{"type":"output_text","text":"Hi there! ☀️","annotations":[]}}"#),
        ("response.output_item.done", #"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! ☀️","annotations":[]}]}}"#),
        ("response.output_item.added", #"{"type":"response.output_item.added","sequence_number":9,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_1","name":"get_weather"}}"#),
        ("response.function_call_arguments.delta", #"{"type":"response.function_call_arguments.delta","sequence_number":10,"item_id":"fc_1","output_index":1,"delta":"{\"location\":"}"#),
        ("response.function_call_arguments.delta", #"{"type":"response.function_call_arguments.delta","sequence_number":11,"item_id":"fc_1","output_index":1,"delta":"\"Paris\"}"}"#),
    ]

    static let responsesStream = sse(responsesStreamEvents + [
        ("response.function_call_arguments.done", #"{"type":"response.function_call_arguments.done","sequence_number":12,"item_id":"fc_1","output_index":1,"arguments":"{\"location\":\"Paris\"}"}"#),
        ("response.output_item.done", #"{"type":"response.output_item.done","sequence_number":13,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"location\":\"Paris\"}","call_id":"call_1","name":"get_weather"}}"#),
        ("response.completed", #"{"type":"response.completed","sequence_number":14,"response":"# + responseCompleted + "}"),
    ])

    /// The same stream cut before `response.completed` (no usage, no final object).
    static let responsesStreamWithoutCompletion = sse(responsesStreamEvents)

    // MARK: Anthropic Messages

    static let anthropicPath = "/v1/messages"

    static let anthropicRequest = #"""
    {"model":"claude-sonnet-4-20250514","max_tokens":1024,"system":"Be brief.","tools":[{"name":"get_weather","description":"Get the weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}],"messages":[{"role":"user","content":"What's the weather like in San Francisco?"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_0","name":"get_weather","input":{"location":"SF"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_0","content":"15 degrees"}]}],"stream":true}
    """#

    static let anthropicMessage = #"""
    {"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"I'll check the current weather "},{"type":"text","text":"in San Francisco."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"location":"San Francisco, CA","unit":"celsius"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":89,"service_tier":"standard"}}
    """#

    /// Text, then a tool_use block whose input arrives as partial JSON; two cumulative message_delta usages.
    static let anthropicStream = sse([
        ("message_start", #"{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":100,"output_tokens":2,"service_tier":"standard"}}}"#),
        ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ("ping", #"{"type": "ping"}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check "}}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"the weather — ☁️ for San Francisco."}}"#),
        ("content_block_stop", #"{"type":"content_block_stop","index":0}"#),
        ("content_block_start", #"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\""}}"#),
        ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", \"unit\": \"fahrenheit\"}"}}"#),
        ("content_block_stop", #"{"type":"content_block_stop","index":1}"#),
        ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":60}}"#),
        ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#),
        ("message_stop", #"{"type":"message_stop"}"#),
    ])

    static let anthropicStreamText = "Okay, let's check the weather — ☁️ for San Francisco."
}
