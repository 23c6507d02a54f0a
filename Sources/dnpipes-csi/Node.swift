import GRPCCore
import Logging

/// CSI Node: publish (mount dnpipes at the pod's target path) and unpublish. There is no staging step: each
/// publish is a mount of its own, since a pod's volume context chooses its brokers and prefix.
struct NodeService: Csi_V1_Node.SimpleServiceProtocol {
    let nodeID: String
    let volumes: Volumes
    let logger: Logger

    func nodePublishVolume(request: Csi_V1_NodePublishVolumeRequest, context: ServerContext) async throws
        -> Csi_V1_NodePublishVolumeResponse {
        let volume: VolumeSpec
        let secrets: VolumeSecrets
        do {
            (volume, secrets) = try VolumeSpec.parse(request)
        } catch let error as VolumeSpec.Invalid {
            logger.warning("NodePublishVolume refused: \(error.description)", metadata: ["volume": "\(request.volumeID)"])
            throw RPCError(code: .invalidArgument, message: error.description)
        }
        try await volumes.publish(volume, secrets: secrets)
        return Csi_V1_NodePublishVolumeResponse()
    }

    func nodeUnpublishVolume(request: Csi_V1_NodeUnpublishVolumeRequest, context: ServerContext) async throws
        -> Csi_V1_NodeUnpublishVolumeResponse {
        guard !request.volumeID.isEmpty else { throw invalid("volume_id is missing", request.targetPath) }
        guard !request.targetPath.isEmpty else { throw invalid("target_path is missing", request.volumeID) }
        guard request.targetPath.hasPrefix("/") else { throw invalid("target_path must be absolute", request.volumeID) }
        try await volumes.unpublish(volumeID: request.volumeID, targetPath: request.targetPath)
        return Csi_V1_NodeUnpublishVolumeResponse()
    }

    /// VOLUME_MOUNT_GROUP: kubelet passes the pod's fsGroup in the publish request (it cannot chown a pipe
    /// directory itself), and the mount's pipes then belong to that group.
    func nodeGetCapabilities(request: Csi_V1_NodeGetCapabilitiesRequest, context: ServerContext) async throws
        -> Csi_V1_NodeGetCapabilitiesResponse {
        var capability = Csi_V1_NodeServiceCapability()
        var rpc = Csi_V1_NodeServiceCapability.RPC()
        rpc.type = .volumeMountGroup
        capability.rpc = rpc
        var response = Csi_V1_NodeGetCapabilitiesResponse()
        response.capabilities = [capability]
        return response
    }

    func nodeGetInfo(request: Csi_V1_NodeGetInfoRequest, context: ServerContext) async throws -> Csi_V1_NodeGetInfoResponse {
        var response = Csi_V1_NodeGetInfoResponse()
        response.nodeID = nodeID
        return response
    }

    private func invalid(_ message: String, _ other: String) -> RPCError {
        logger.warning("NodeUnpublishVolume refused: \(message)", metadata: ["request": "\(other)"])
        return RPCError(code: .invalidArgument, message: message)
    }
}
